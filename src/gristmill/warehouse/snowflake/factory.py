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


REQUIRED = ("account", "user", "password")


def create(settings: Settings, *, read_only: bool = False) -> SnowflakeWarehouse:
    cfg = _settings(settings)
    missing = [f"GRISTMILL_WAREHOUSE__{f.upper()}" for f in REQUIRED if getattr(cfg, f) is None]
    if missing:
        raise ValueError(
            f"set {', '.join(missing)} (and GRISTMILL_WAREHOUSE__WAREHOUSE, __ROLE, "
            "__DATABASE as your account needs)"
        )
    try:
        from gristmill.warehouse.snowflake.client import SnowflakeWarehouse
    except ImportError as exc:
        raise ValueError(f"{exc.name} is missing: pip install 'gristmill[snowflake]'") from exc
    return SnowflakeWarehouse(cfg, read_only=read_only)
