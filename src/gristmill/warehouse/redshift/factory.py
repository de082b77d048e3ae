"""Redshift factory: name, capabilities, construction. Imports ``redshift_connector`` only in
``create``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlglot import exp

from gristmill.config import RedshiftSettings, Settings
from gristmill.pack.models import Pack
from gristmill.warehouse.base import Capabilities

if TYPE_CHECKING:
    from gristmill.warehouse.redshift.client import RedshiftWarehouse

NAME = "redshift"
DIALECT = "redshift"
CAPABILITIES = Capabilities(
    transactions=True,
    # No declared partitions: a compound SORTKEY led by the time column prunes blocks by
    # their zone maps instead. DISTKEY and the rest of the SORTKEY come from cluster_by.
    native_partitioning=False,
    native_clustering=True,
    json_type=True,
    max_identifier_length=127,
    # No ON CONFLICT: rollups and freshness are kept with DELETE/INSERT and MERGE.
    upsert_by_merge=True,
)


def _settings(settings: Settings) -> RedshiftSettings:
    cfg = settings.warehouse
    return cfg if isinstance(cfg, RedshiftSettings) else RedshiftSettings()


def ddl(packs: Sequence[Pack], settings: Settings, extra: Sequence[exp.Expr] = ()) -> list[str]:
    """The DDL ``provision`` applies, rendered without connecting (no credentials needed)."""
    from gristmill.warehouse.redshift.sql import pack_ddl, sort_rollup, sql

    return [sql(s) for s in [*pack_ddl(packs), *(sort_rollup(e) for e in extra)]]


REQUIRED = ("host", "user", "password")


def create(settings: Settings, *, read_only: bool = False) -> RedshiftWarehouse:
    cfg = _settings(settings)
    missing = [f"GRISTMILL_WAREHOUSE__{f.upper()}" for f in REQUIRED if getattr(cfg, f) is None]
    if missing:
        raise ValueError(f"set {', '.join(missing)} (and GRISTMILL_WAREHOUSE__DATABASE)")
    try:
        from gristmill.warehouse.redshift.client import RedshiftWarehouse
    except ImportError as exc:
        raise ValueError(f"{exc.name} is missing: pip install 'gristmill[redshift]'") from exc
    return RedshiftWarehouse(cfg, read_only=read_only)
