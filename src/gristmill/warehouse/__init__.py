"""Layer 2: warehouses behind one protocol; one folder per engine with the same files."""

from gristmill.warehouse.base import (
    Capabilities,
    LoadBatch,
    LoadResult,
    Readiness,
    SourceCounts,
    TableRows,
    Warehouse,
)
from gristmill.warehouse.registry import open_warehouse

__all__ = [
    "Capabilities",
    "LoadBatch",
    "LoadResult",
    "Readiness",
    "SourceCounts",
    "TableRows",
    "Warehouse",
    "open_warehouse",
]
