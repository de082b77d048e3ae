"""PostgreSQL factory: name, capabilities, construction. Imports the driver only in ``create``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gristmill.config import PostgresSettings, Settings
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
)


def create(settings: Settings, *, read_only: bool = False) -> PostgresWarehouse:
    from gristmill.warehouse.postgres.client import PostgresWarehouse

    cfg = settings.warehouse
    assert isinstance(cfg, PostgresSettings)
    return PostgresWarehouse(
        cfg.dsn.get_secret_value(), partitions_ahead=cfg.partitions_ahead, read_only=read_only
    )
