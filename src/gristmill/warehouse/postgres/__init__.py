"""PostgreSQL warehouse (``pip install gristmill[postgres]``)."""
