"""PostgreSQL factory: name, capabilities, construction. Imports the driver only in ``create``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlglot import exp

from gristmill.config import PostgresSettings, Settings
from gristmill.pack.models import Pack
from gristmill.warehouse.base import Capabilities

if TYPE_CHECKING:
    from gristmill.warehouse.postgres.client import PostgresWarehouse

NAME = "postgres"
DIALECT = "postgres"
CAPABILITIES = Capabilities(
    transactions=True,
    native_partitioning=True,
    # No clustering: a b-tree on the clustering keys, inherited by every partition.
    native_clustering=False,
    json_type=True,
    max_identifier_length=63,
    secondary_indexes=True,
    delta_rollups=True,
    rollup_appends=True,
)


def ddl(packs: Sequence[Pack], settings: Settings, extra: Sequence[exp.Expr] = ()) -> list[str]:
    """The DDL ``provision`` applies, rendered without connecting."""
    from gristmill.warehouse.postgres.sql import pack_ddl, render

    cfg = settings.warehouse
    ahead = cfg.partitions_ahead if isinstance(cfg, PostgresSettings) else 7
    return render(pack_ddl(packs, ahead), extra)


def create(settings: Settings, *, read_only: bool = False) -> PostgresWarehouse:
    from gristmill.warehouse.postgres.client import PostgresWarehouse

    cfg = settings.warehouse
    assert isinstance(cfg, PostgresSettings)
    return PostgresWarehouse(
        cfg.dsn.get_secret_value(),
        partitions_ahead=cfg.partitions_ahead,
        read_only=read_only,
        fold_every=cfg.fold_every,
    )
