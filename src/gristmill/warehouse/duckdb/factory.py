"""DuckDB factory: name, capabilities, construction. Imports the driver only in ``create``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gristmill.config import DuckDBSettings, Settings
from gristmill.warehouse.base import Capabilities

if TYPE_CHECKING:
    from gristmill.warehouse.duckdb.client import DuckDBWarehouse

NAME = "duckdb"
DIALECT = "duckdb"
CAPABILITIES = Capabilities(
    transactions=True,
    # DuckDB prunes by per-row-group min/max (zonemaps); events arrive roughly in time order,
    # so occurred_at filters prune well without declared partitions or clustering.
    native_partitioning=False,
    native_clustering=False,
    json_type=True,
)


def create(settings: Settings, *, read_only: bool = False) -> DuckDBWarehouse:
    from gristmill.warehouse.duckdb.client import DuckDBWarehouse

    cfg = settings.warehouse
    assert isinstance(cfg, DuckDBSettings)
    return DuckDBWarehouse(
        settings.warehouse_path,
        threads=cfg.threads,
        memory_limit=cfg.memory_limit,
        read_only=read_only,
    )
