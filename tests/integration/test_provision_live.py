"""The provisioning plan against live BigQuery, Snowflake and Redshift: the same code path as
the engines that run here (plan, apply, an empty plan after it, a column added by someone else
listed as blocking). Gated like their conformance suites: skipped unless their credentials
are set."""

from __future__ import annotations

import os
import uuid

import pytest
from sqlglot import exp

from gristmill.config import Settings
from gristmill.pack.loader import load_pack
from gristmill.warehouse import provision as pv
from gristmill.warehouse.base import Warehouse
from tests.conftest import PACKS


def _round_trip(target: str, wh: Warehouse, settings: Settings, extra_column: str) -> None:
    packs = [load_pack(PACKS / "sales_feeds")]
    want = pv.desired(target, packs, settings)

    def plan() -> pv.Plan:
        cat = pv.read_catalogue(wh, target, want)
        return pv.make_plan(target, packs, settings, cat, want, live=True)

    first = plan()
    assert {c.action for c in first.changes} >= {"create_schema", "create_table"}
    pv.apply(wh, first)
    again = plan()
    assert again.changes == ()
    assert plan().document == again.document
    wh.execute(exp.maybe_parse(extra_column, dialect=target))
    (change,) = plan().changes
    assert (change.action, change.blocking) == ("unmanaged_column", True)


@pytest.mark.skipif(
    not (
        os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        and os.environ.get("GRISTMILL_TEST_BIGQUERY_PROJECT")
    ),
    reason="BigQuery is not reachable here: set GOOGLE_APPLICATION_CREDENTIALS and "
    "GRISTMILL_TEST_BIGQUERY_PROJECT (and install gristmill[bigquery]) to run this",
)
def test_bigquery_plan_apply_and_empty_plan() -> None:
    from tests.integration.test_warehouse_bigquery import PROJECT, _drop, _open

    prefix = f"gm_test_{uuid.uuid4().hex[:10]}_"
    wh = _open(prefix)
    settings = Settings(
        packs=["sales_feeds"],
        warehouse={"type": "bigquery", "project": PROJECT, "dataset_prefix": prefix},
    )
    try:
        _round_trip(
            "bigquery",
            wh,
            settings,
            "ALTER TABLE `sales_feeds`.`fact_sales` ADD COLUMN note STRING",
        )
    finally:
        _drop(wh, prefix, load_pack(PACKS / "sales_feeds"))
        wh.close()


@pytest.mark.skipif(
    not all(
        os.environ.get(n) for n in ("SNOWFLAKE_ACCOUNT", "SNOWFLAKE_USER", "SNOWFLAKE_PASSWORD")
    ),
    reason="Snowflake is not reachable here: set SNOWFLAKE_ACCOUNT, SNOWFLAKE_USER and "
    "SNOWFLAKE_PASSWORD (and install gristmill[snowflake]) to run this",
)
def test_snowflake_plan_apply_and_empty_plan() -> None:
    import snowflake.connector

    from gristmill.warehouse.snowflake.client import SnowflakeWarehouse
    from tests.integration.test_warehouse_snowflake import _database, _settings

    database = f"GM_TEST_{uuid.uuid4().hex[:10].upper()}"
    cfg = _settings(database)
    assert cfg.password is not None
    admin = snowflake.connector.connect(
        account=cfg.account,
        user=cfg.user,
        password=cfg.password.get_secret_value(),
        warehouse=cfg.warehouse,
        role=cfg.role,
    )
    admin.cursor().execute(_database(database, drop=False))
    wh = SnowflakeWarehouse(cfg)
    try:
        settings = Settings(packs=["sales_feeds"], warehouse=cfg)
        _round_trip(
            "snowflake",
            wh,
            settings,
            'ALTER TABLE "sales_feeds"."fact_sales" ADD COLUMN "note" TEXT',
        )
    finally:
        wh.close()
        admin.cursor().execute(_database(database, drop=True))
        admin.close()


@pytest.mark.skipif(
    not all(os.environ.get(n) for n in ("REDSHIFT_HOST", "REDSHIFT_USER", "REDSHIFT_PASSWORD")),
    reason="Redshift is not reachable here: set REDSHIFT_HOST, REDSHIFT_USER and "
    "REDSHIFT_PASSWORD (and install gristmill[redshift]) to run this",
)
def test_redshift_plan_apply_and_empty_plan() -> None:
    """Also reads the layout back: the distribution and sort key the plan compares come from
    svv_table_info and pg_table_def, so an empty plan after apply checks that reading."""
    import redshift_connector

    from gristmill.warehouse.redshift.client import RedshiftWarehouse
    from tests.integration.test_warehouse_redshift import _settings

    database = f"gm_test_{uuid.uuid4().hex[:10]}"
    cfg = _settings(database)
    assert cfg.password is not None
    admin = redshift_connector.connect(
        host=cfg.host,
        port=cfg.port,
        database=os.environ.get("REDSHIFT_DATABASE", "dev"),
        user=cfg.user,
        password=cfg.password.get_secret_value(),
    )
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{database}"')
    wh = RedshiftWarehouse(cfg)
    try:
        settings = Settings(packs=["sales_feeds"], warehouse=cfg)
        want = pv.desired("redshift", [load_pack(PACKS / "sales_feeds")], settings)
        _round_trip(
            "redshift",
            wh,
            settings,
            'ALTER TABLE "sales_feeds"."fact_sales" ADD COLUMN "note" VARCHAR(256)',
        )
        state = pv.read_catalogue(wh, "redshift", want).tables["sales_feeds.fact_sales"]
        assert state.partitioning == "distkey(business_id)"
        assert state.clustering[0] == "occurred_at"
    finally:
        wh.close()
        admin.cursor().execute(f'DROP DATABASE "{database}"')
        admin.close()
