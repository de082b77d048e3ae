"""The warehouse conformance suite on BigQuery, plus BigQuery-specific checks (partitioning,
clustering, expiration as created; readiness naming a missing dataset).

Live: runs when ``GOOGLE_APPLICATION_CREDENTIALS`` and ``GRISTMILL_TEST_BIGQUERY_PROJECT`` are
set (optionally ``GRISTMILL_TEST_BIGQUERY_LOCATION``), and needs ``gristmill[bigquery]``.
Every test works in datasets of its own (a random prefix) and deletes them afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from gristmill.config import BigQuerySettings
from gristmill.pack.models import Pack
from gristmill.warehouse.base import Warehouse
from tests.integration.warehouse_conformance import Conformance

PROJECT = os.environ.get("GRISTMILL_TEST_BIGQUERY_PROJECT")
pytestmark = pytest.mark.skipif(
    not (os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") and PROJECT),
    reason="BigQuery is not reachable here: set GOOGLE_APPLICATION_CREDENTIALS and "
    "GRISTMILL_TEST_BIGQUERY_PROJECT (and install gristmill[bigquery]) to run these",
)


def _open(prefix: str) -> Warehouse:
    from gristmill.warehouse.bigquery.client import BigQueryWarehouse

    location = os.environ.get("GRISTMILL_TEST_BIGQUERY_LOCATION", "US")
    return BigQueryWarehouse(
        BigQuerySettings(project=PROJECT, location=location, dataset_prefix=prefix)
    )


def _drop(wh: Warehouse, prefix: str, pack: Pack) -> None:
    client = wh._client  # type: ignore[attr-defined]  # test cleanup through the live client
    for ds in ("_gristmill", "_gristmill_stage", pack.dataset):
        client.delete_dataset(f"{PROJECT}.{prefix}{ds}", delete_contents=True, not_found_ok=True)


class TestBigQuery(Conformance):
    @pytest.fixture
    def warehouse(self, pack: Pack) -> Iterator[Warehouse]:
        prefix = f"gm_test_{uuid.uuid4().hex[:10]}_"
        wh = _open(prefix)
        try:
            wh.provision([pack], apply=True)
            yield wh
        finally:
            _drop(wh, prefix, pack)
            wh.close()

    def test_tables_are_partitioned_clustered_and_expire(
        self, warehouse: Warehouse, pack: Pack
    ) -> None:
        client = warehouse._client  # type: ignore[attr-defined]
        prefix = warehouse.cfg.dataset_prefix  # type: ignore[attr-defined]
        table = client.get_table(f"{PROJECT}.{prefix}{pack.dataset}.marketplace_events")
        assert table.time_partitioning.type_ == "DAY"
        assert table.time_partitioning.field == "occurred_at"
        assert table.clustering_fields == ["vendor_store_id", "store_id", "event_type"]
        assert table.time_partitioning.expiration_ms == 2555 * 86_400_000

    def test_readiness_names_a_missing_dataset(self, pack: Pack) -> None:
        wh = _open(f"gm_absent_{uuid.uuid4().hex[:10]}_")
        try:
            r = wh.check_ready([pack])
        finally:
            wh.close()
        assert not r.ok
        assert any(p.startswith("missing dataset ") and "_gristmill" in p for p in r.problems)
