"""Layer 2: SQL built as sqlglot expressions once, rendered per warehouse dialect.

Identifiers reaching these builders come from a loaded pack (validated against ``IDENT``) or
from constants here; values are bound parameters. Nothing here formats SQL text by hand.
"""
