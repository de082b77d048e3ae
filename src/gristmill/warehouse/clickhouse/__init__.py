"""ClickHouse warehouse: in process through chdb, or a server through clickhouse-connect
(``pip install gristmill[clickhouse]``)."""
