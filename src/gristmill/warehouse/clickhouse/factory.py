"""ClickHouse factory: name, capabilities, construction. Imports a driver only in ``create``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlglot import exp

from gristmill.config import ClickHouseSettings, Settings
from gristmill.pack.models import Pack
from gristmill.warehouse.base import Capabilities

if TYPE_CHECKING:
    from gristmill.warehouse.clickhouse.client import ClickHouseWarehouse

NAME = "clickhouse"
DIALECT = "clickhouse"
CAPABILITIES = Capabilities(
    # No multi-statement transactions: a load is idempotent steps tagged with the batch id,
    # committed by one ledger insert (see client.py).
    transactions=False,
    native_partitioning=True,
    native_clustering=True,
    json_type=False,
    max_identifier_length=255,
    # Each load appends its batch's rollup delta as a part of its own (compacted later).
    delta_rollups=True,
)


def ddl(packs: Sequence[Pack], settings: Settings, extra: Sequence[exp.Expr] = ()) -> list[str]:
    """The DDL ``provision`` applies, rendered without connecting."""
    from gristmill.warehouse.clickhouse.sql import pack_ddl, render

    return render([*pack_ddl(packs), *extra])


def create(settings: Settings, *, read_only: bool = False) -> ClickHouseWarehouse:
    from gristmill.warehouse.clickhouse.client import ClickHouseWarehouse
    from gristmill.warehouse.clickhouse.connection import connect

    cfg = settings.warehouse
    assert isinstance(cfg, ClickHouseSettings)
    url = cfg.url.get_secret_value() if cfg.url is not None else None
    return ClickHouseWarehouse(connect(url, settings.warehouse_path), read_only=read_only)
