"""DuckDB: the embedded default warehouse (a single file, no server)."""
