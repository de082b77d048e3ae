"""Name patterns of the pack format. Names that become SQL identifiers match ``IDENT`` and
are always quoted, which is what lets the SQL layer take them without further escaping."""

IDENT = r"^[a-z][a-z0-9_]{0,62}$"
EVENT_NAME = r"^[a-z][a-z0-9_.\-]{0,127}$"
