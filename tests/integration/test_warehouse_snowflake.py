"""The warehouse conformance suite on Snowflake, plus its clustering keys as created.

Live: runs when ``SNOWFLAKE_ACCOUNT``, ``SNOWFLAKE_USER`` and ``SNOWFLAKE_PASSWORD`` are set
(optionally ``SNOWFLAKE_WAREHOUSE`` and ``SNOWFLAKE_ROLE``), and needs ``gristmill[snowflake]``.
Every test works in a database of its own and drops it afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlglot import exp

from gristmill.config import SnowflakeSettings
from gristmill.pack.models import Pack
from gristmill.warehouse.base import Warehouse
from tests.integration.warehouse_conformance import Conformance

NEEDED = ("SNOWFLAKE_ACCOUNT", "SNOWFLAKE_USER", "SNOWFLAKE_PASSWORD")
pytestmark = pytest.mark.skipif(
    not all(os.environ.get(n) for n in NEEDED),
    reason="Snowflake is not reachable here: set SNOWFLAKE_ACCOUNT, SNOWFLAKE_USER and "
    "SNOWFLAKE_PASSWORD (and install gristmill[snowflake]) to run these",
)


def _settings(database: str) -> SnowflakeSettings:
    return SnowflakeSettings(
        account=os.environ["SNOWFLAKE_ACCOUNT"],
        user=os.environ["SNOWFLAKE_USER"],
        password=SecretStr(os.environ["SNOWFLAKE_PASSWORD"]),
        database=database,
        warehouse=os.environ.get("SNOWFLAKE_WAREHOUSE"),
        role=os.environ.get("SNOWFLAKE_ROLE"),
    )


def _database(name: str, *, drop: bool) -> str:
    node = exp.Drop if drop else exp.Create
    return node(this=exp.to_identifier(name, quoted=True), kind="DATABASE", exists=True).sql(
        "snowflake"
    )


class TestSnowflake(Conformance):
    @pytest.fixture
    def warehouse(self, pack: Pack) -> Iterator[Warehouse]:
        import snowflake.connector

        from gristmill.warehouse.snowflake.client import SnowflakeWarehouse

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
            wh.provision([pack], apply=True)
            yield wh
        finally:
            wh.close()
            admin.cursor().execute(_database(database, drop=True))
            admin.close()

    def test_clustering_keys_as_created(self, warehouse: Warehouse, pack: Pack) -> None:
        # Snowflake's own catalog is upper case: asked directly, not through quoting.
        cur = warehouse._conn.cursor()  # type: ignore[attr-defined]
        cur.execute(
            "SELECT clustering_key FROM information_schema.tables "
            "WHERE table_schema = ? AND table_name = ?",
            [pack.dataset, "marketplace_events"],
        )
        key = str(cur.fetchone()[0])
        assert "vendor_store_id" in key
        assert "event_type" in key
