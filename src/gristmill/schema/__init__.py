"""Layer 1: compiled validators per (pack, event type, schema version)."""

from gristmill.schema.registry import SchemaRegistry, Verdict

__all__ = ["SchemaRegistry", "Verdict"]
