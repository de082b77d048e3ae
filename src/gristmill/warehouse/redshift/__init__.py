"""Amazon Redshift warehouse (``gristmill[redshift]``)."""
