"""BigQuery factory: name, capabilities, construction. Imports the client library only in
``create``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlglot import exp

from gristmill.config import BigQuerySettings, Settings
from gristmill.pack.models import Pack
from gristmill.warehouse.base import Capabilities

if TYPE_CHECKING:
    from gristmill.warehouse.bigquery.client import BigQueryWarehouse

NAME = "bigquery"
DIALECT = "bigquery"
CAPABILITIES = Capabilities(
    # Multi-statement transactions in a session: the load's statements commit together.
    transactions=True,
    native_partitioning=True,
    native_clustering=True,
    json_type=True,
    max_identifier_length=1024,
    upsert_by_merge=True,
)


def _settings(settings: Settings) -> BigQuerySettings:
    cfg = settings.warehouse
    return cfg if isinstance(cfg, BigQuerySettings) else BigQuerySettings()


def ddl(packs: Sequence[Pack], settings: Settings, extra: Sequence[exp.Expr] = ()) -> list[str]:
    """The DDL ``provision`` applies, rendered without connecting (no credentials needed)."""
    from gristmill.warehouse.bigquery.sql import Naming, pack_ddl, partition_rollup

    cfg = _settings(settings)
    naming = Naming(cfg.dataset_prefix)
    stmts = [*pack_ddl(packs, cfg.location), *(partition_rollup(e) for e in extra)]
    return [naming.sql(s) for s in stmts]


def schema_files(packs: Sequence[Pack]) -> dict[str, str]:
    """``<table>.schema.json`` per pack table (no client needed)."""
    from gristmill.warehouse.bigquery.schema import schema_files as files

    return files(list(packs))


CREDENTIALS = (
    "set GRISTMILL_WAREHOUSE__PROJECT (the Google Cloud project) and "
    "GOOGLE_APPLICATION_CREDENTIALS (a service account key file), or run where "
    "Application Default Credentials exist"
)


def create(settings: Settings, *, read_only: bool = False) -> BigQueryWarehouse:
    cfg = _settings(settings)
    if not cfg.project:
        raise ValueError(CREDENTIALS)
    try:
        from gristmill.warehouse.bigquery.client import BigQueryWarehouse
    except ImportError as exc:
        raise ValueError(f"{exc.name} is missing: pip install 'gristmill[bigquery]'") from exc
    return BigQueryWarehouse(cfg, read_only=read_only)
