"""BigQuery warehouse (``pip install gristmill[bigquery]``)."""
