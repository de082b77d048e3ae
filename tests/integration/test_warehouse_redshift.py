"""The warehouse conformance suite on Amazon Redshift, plus its sort and distribution keys as
created.

Live: runs when ``REDSHIFT_HOST``, ``REDSHIFT_USER`` and ``REDSHIFT_PASSWORD`` are set
(optionally ``REDSHIFT_DATABASE``, default ``dev``, and for loads by ``COPY``
``REDSHIFT_STAGING_BUCKET`` with ``REDSHIFT_IAM_ROLE``), and needs ``gristmill[redshift]``.
Every test works in a database of its own and drops it afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr

from gristmill.config import RedshiftSettings, RedshiftStagingSettings
from gristmill.pack.models import Pack
from gristmill.warehouse.base import Warehouse
from tests.integration.warehouse_conformance import Conformance

NEEDED = ("REDSHIFT_HOST", "REDSHIFT_USER", "REDSHIFT_PASSWORD")
pytestmark = pytest.mark.skipif(
    not all(os.environ.get(n) for n in NEEDED),
    reason="Redshift is not reachable here: set REDSHIFT_HOST, REDSHIFT_USER and "
    "REDSHIFT_PASSWORD (and install gristmill[redshift]) to run these",
)


def _settings(database: str) -> RedshiftSettings:
    bucket = os.environ.get("REDSHIFT_STAGING_BUCKET")
    return RedshiftSettings(
        host=os.environ["REDSHIFT_HOST"],
        port=int(os.environ.get("REDSHIFT_PORT", "5439")),
        user=os.environ["REDSHIFT_USER"],
        password=SecretStr(os.environ["REDSHIFT_PASSWORD"]),
        database=database,
        staging=RedshiftStagingSettings(
            bucket=bucket, iam_role=os.environ.get("REDSHIFT_IAM_ROLE")
        ),
        # Small enough that the conformance batches take the COPY path when a bucket is set.
        copy_min_rows=2,
    )


class TestRedshift(Conformance):
    @pytest.fixture
    def warehouse(self, pack: Pack) -> Iterator[Warehouse]:
        import redshift_connector

        from gristmill.warehouse.redshift.client import RedshiftWarehouse

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
            wh.provision([pack], apply=True)
            yield wh
        finally:
            wh.close()
            admin.cursor().execute(f'DROP DATABASE "{database}"')
            admin.close()

    def test_sort_and_dist_keys_as_created(self, warehouse: Warehouse, pack: Pack) -> None:
        cur = warehouse._conn.cursor()  # type: ignore[attr-defined]
        cur.execute(f'SET search_path TO "{pack.dataset}"')  # pg_table_def lists only these
        cur.execute(
            'SELECT "column", distkey, sortkey FROM pg_table_def '
            "WHERE schemaname = %s AND tablename = %s",
            (pack.dataset, "marketplace_events"),
        )
        rows = {str(c): (bool(d), int(s)) for c, d, s in cur.fetchall()}
        assert rows["vendor_store_id"][0] is True
        assert rows["occurred_at"][1] == 1
