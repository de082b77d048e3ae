"""Snowflake warehouse (``pip install gristmill[snowflake]``)."""
