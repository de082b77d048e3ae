"""Layer 1: the pack format (``packs/<name>/pack.yaml`` + ``schemas/``), its models and loader."""

from gristmill.pack.loader import load_pack, load_packs
from gristmill.pack.models import ColumnType, EventTypeSpec, Pack, PackSpec, TableSpec

__all__ = [
    "ColumnType",
    "EventTypeSpec",
    "Pack",
    "PackSpec",
    "TableSpec",
    "load_pack",
    "load_packs",
]
