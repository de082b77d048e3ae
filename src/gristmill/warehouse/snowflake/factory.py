"""Snowflake factory: name, capabilities, construction. Imports the connector only in
``create``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlglot import exp

from gristmill.config import Settings, SnowflakeSettings
from gristmill.pack.models import Pack
from gristmill.warehouse.base import Capabilities

if TYPE_CHECKING:
    from gristmill.warehouse.snowflake.client import SnowflakeWarehouse

NAME = "snowflake"
DIALECT = "snowflake"
CAPABILITIES = Capabilities(
    transactions=True,
    # Micro-partitions are automatic; nothing is declared. Clustering keys are.
    native_partitioning=False,
    native_clustering=True,
    json_type=True,
    max_identifier_length=255,
    upsert_by_merge=True,
)


def _settings(settings: Settings) -> SnowflakeSettings:
    cfg = settings.warehouse
    return cfg if isinstance(cfg, SnowflakeSettings) else SnowflakeSettings()


def ddl(packs: Sequence[Pack], settings: Settings, extra: Sequence[exp.Expr] = ()) -> list[str]:
    """The DDL ``provision`` applies, rendered without connecting (no credentials needed)."""
    from gristmill.warehouse.snowflake.sql import pack_ddl, sql

    return [sql(s) for s in [*pack_ddl(packs), *extra]]


def create(settings: Settings, *, read_only: bool = False) -> SnowflakeWarehouse:
    from gristmill.warehouse.snowflake.client import SnowflakeWarehouse

    return SnowflakeWarehouse(_settings(settings), read_only=read_only)
