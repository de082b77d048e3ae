"""The operations series of ``/metrics``: pack KPI gauges (``observe:``), freshness lag and
budget, the watermark lag, export jobs through the ``rt.exports`` contract, ingest latency.
Expected values are computed from the events the test sends, not from the engine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlglot import exp

from gristmill.api.app import create_app
from gristmill.core.errors import ConfigError
from gristmill.pack.loader import load_pack
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.prom import find, packs_with, recent_ads, recent_orders, samples


@contextmanager
def served(tmp: Path, packs_dir: Path | None = None) -> Iterator[tuple[Runtime, TestClient, str]]:
    extra: dict[str, Any] = {"server": {"metrics_allow": ["testclient"]}}
    if packs_dir is not None:
        extra["packs_dir"] = packs_dir
    rt = Runtime(make_settings(tmp / "data", **extra))
    key = rt.meta.create_key("write", "t", pack="marketplace", source="web")[1]
    try:
        with TestClient(create_app(rt, start=False)) as client:
            yield rt, client, key
    finally:
        rt.stop()


def post(client: TestClient, key: str, events: list[dict[str, Any]]) -> None:
    r = client.post(
        "/v1/events",
        content=orjson.dumps(events),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text


def test_pack_metrics_over_the_trailing_window(tmp_path: Path) -> None:
    amounts = [1200, 800, 4000]
    with served(tmp_path) as (rt, client, key):
        post(client, key, recent_orders(amounts))
        post(client, key, recent_orders([999], occurred_at="2020-01-01T00:00:00Z"))  # too old
        post(client, key, recent_ads(4, cost=7) + recent_ads(2, "ad_click", cost=50))
        rt.loader.drain()
        text = client.get("/metrics").text
    one = {"pack": "marketplace", "event_type": "order_created"}
    assert [s.value for s in find(text, "gristmill_pack_metric", metric="orders", **one)] == [3]
    assert [s.value for s in find(text, "gristmill_pack_metric", metric="gmv_cents", **one)] == [
        sum(amounts)
    ]
    spend = find(text, "gristmill_pack_metric", pack="marketplace", metric="ad_spend_cents")
    assert {s.labels["event_type"]: s.value for s in spend if s.value} == {
        "ad_impression": 4 * 7,
        "ad_click": 2 * 50,
    }
    (wm,) = find(text, "gristmill_pack_metric_watermark_seconds", pack="marketplace")
    assert wm.value > 0
    assert find(text, "gristmill_pack_metric_failures_total", pack="marketplace")[0].value == 0


def test_values_are_cached_between_scrapes(tmp_path: Path) -> None:
    spec = {"window": "1h", "metrics": ["orders"], "cache_s": 300}
    with served(tmp_path, packs_with(tmp_path, observe=spec)) as (rt, client, key):
        post(client, key, recent_orders([100, 200]))
        rt.loader.drain()
        first = client.get("/metrics").text
        post(client, key, recent_orders([300]))
        rt.loader.drain()
        second = client.get("/metrics").text
    for text in (first, second):  # the second scrape is within cache_s: same answer
        assert [s.value for s in find(text, "gristmill_pack_metric", metric="orders")] == [2]


def test_max_series_folds_the_smallest_groups(tmp_path: Path) -> None:
    """12 vendors x 2 metrics under max_series 10: the 4 largest vendors and one __other__
    group; the sums over all series still equal the totals."""
    spec = {
        "window": "1h",
        "group_by": ["vendor_store_id"],
        "metrics": {"orders": "orders", "gmv": "gmv_cents"},
        "max_series": 10,
    }
    events = []
    for v in range(12):
        events += recent_orders([100 * (v + 1)] * (v + 1), vendor=f"v{v:02d}")
    with served(tmp_path, packs_with(tmp_path, observe=spec)) as (rt, client, key):
        post(client, key, events)
        rt.loader.drain()
        text = client.get("/metrics").text
    series = find(text, "gristmill_pack_metric", pack="marketplace")
    assert len(series) == 10
    orders = {
        s.labels["vendor_store_id"]: s.value for s in series if s.labels["metric"] == "orders"
    }
    assert orders == {"v11": 12, "v10": 11, "v09": 10, "v08": 9, "__other__": sum(range(1, 9))}
    gmv = sum(s.value for s in series if s.labels["metric"] == "gmv")
    assert gmv == sum(e["properties"]["amount_cents"] for e in events)
    assert find(text, "gristmill_pack_metric_groups", pack="marketplace")[0].value == 12


def test_freshness_lag_budget_and_watermark(tmp_path: Path) -> None:
    packs = packs_with(tmp_path, freshness_budget="5m")
    with served(tmp_path, packs) as (rt, client, key):
        before = client.get("/metrics").text
        assert find(before, "gristmill_freshness_lag_seconds") == []  # nothing loaded yet
        post(client, key, recent_orders([100]))
        pending = client.get("/metrics").text  # received, not loaded
        rt.loader.drain()
        text = client.get("/metrics").text
    (wm,) = find(pending, "gristmill_freshness_watermark_lag_seconds", pack="marketplace")
    assert wm.value > 0
    (wm,) = find(text, "gristmill_freshness_watermark_lag_seconds", pack="marketplace")
    assert wm.value == 0
    lags = find(text, "gristmill_freshness_lag_seconds", pack="marketplace")
    assert [s.labels["table"] for s in lags] == ["marketplace_events"]
    assert 0 <= lags[0].value < 3600
    (budget,) = find(text, "gristmill_freshness_budget_seconds")
    assert (budget.labels, budget.value) == ({"pack": "marketplace"}, 300)


class Exports:
    """The contract ``/metrics`` reads from ``rt.exports`` (api/metrics_ops.py)."""

    def __init__(self, counts: dict[str, int], failures: int, broken: bool = False) -> None:
        self._counts = counts
        self.failures = failures
        self.broken = broken

    def counts(self) -> dict[str, int]:
        if self.broken:
            raise RuntimeError("metadata store unreachable")
        return self._counts


def export_series(text: str) -> tuple[dict[str, float], float]:
    jobs = {s.labels["status"]: s.value for s in find(text, "gristmill_export_jobs")}
    (fails,) = find(text, "gristmill_export_job_failures_total")
    return jobs, fails.value


def test_export_jobs_through_the_runtime_hook(tmp_path: Path) -> None:
    zeros = {"queued": 0, "running": 0, "succeeded": 0, "failed": 0}
    with served(tmp_path) as (rt, client, key):
        assert export_series(client.get("/metrics").text) == (zeros, 0)
        real = rt.exports
        try:
            rt.exports = Exports({"queued": 2, "running": 1, "expired": 4}, failures=3)  # type: ignore[assignment]
            got = export_series(client.get("/metrics").text)
            assert got == ({**zeros, "queued": 2, "running": 1, "expired": 4}, 3)
            rt.exports = Exports({"queued": 2}, failures=3, broken=True)  # type: ignore[assignment]
            assert export_series(client.get("/metrics").text) == (zeros, 0)
            rt.exports = object()  # type: ignore[assignment]  # not the contract: zeros
            assert export_series(client.get("/metrics").text) == (zeros, 0)
        finally:
            rt.exports = real
        # The exports engine itself keeps the contract.
        post(client, key, recent_orders([100]))
        rt.loader.drain()
        admin = rt.keys.resolve(
            rt.meta.create_key("secret", "adm", pack="marketplace", role="admin")[1]
        )
        assert admin is not None
        now = datetime.now(UTC)
        rt.exports.create_rows_export(
            admin,
            "marketplace",
            "marketplace_rows",
            start=now - timedelta(days=1),
            end=now,
            as_job=True,
        )
        assert export_series(client.get("/metrics").text) == ({**zeros, "queued": 1}, 0)
        rt.exports.run_pending()
        assert export_series(client.get("/metrics").text) == ({**zeros, "succeeded": 1}, 0)


def test_ingest_latency_histogram(tmp_path: Path) -> None:
    with served(tmp_path) as (_, client, key):
        post(client, key, recent_orders([1]))
        post(client, key, recent_orders([2]))
        text = client.get("/metrics").text
    (count,) = find(text, "gristmill_http_request_duration_seconds_count", route="/v1/events")
    assert count.value == 2
    buckets = find(text, "gristmill_http_request_duration_seconds_bucket", route="/v1/events")
    assert max(s.value for s in buckets) == 2  # the +Inf bucket holds both


@pytest.mark.parametrize(
    ("observe", "fault"),
    [
        ({"metrics": ["nope"]}, "observe.metrics.nope: unknown metric 'nope'"),
        (
            {"metrics": ["orders"], "group_by": ["placement"]},
            "'placement' is not a dimension of table 'marketplace_events'",
        ),
        ({"metrics": ["orders"], "group_by": ["metric"]}, "is a label of every pack metric"),
        ({"metrics": ["orders"], "window": "0s"}, "must lie between 1s and 31d"),
        ({"metrics": ["orders"], "max_series": 0}, "greater than or equal to 1"),
        ({"metrics": ["orders"], "every": "5m"}, "Extra inputs are not permitted"),
    ],
)
def test_observe_faults_fail_at_load(tmp_path: Path, observe: dict[str, Any], fault: str) -> None:
    root = packs_with(tmp_path, observe=observe)
    with pytest.raises(ConfigError, match=None) as err:
        load_pack(root / "marketplace")
    assert fault in str(err.value)


def test_unscoped_even_for_a_vendor_pack(tmp_path: Path) -> None:
    """The gauges are the operator's view: every vendor's orders count, whatever roles the
    pack's views scope by."""
    with served(tmp_path) as (rt, client, key):
        post(client, key, recent_orders([1, 2], vendor="v1") + recent_orders([3], vendor="v2"))
        rt.loader.drain()
        text = client.get("/metrics").text
    values = [s.value for s in samples(text) if s.labels.get("metric") == "orders"]
    assert sum(values) == 3


def test_a_failing_query_keeps_the_last_values_and_counts(tmp_path: Path) -> None:
    """A warehouse error during a scrape is counted; the scrape still answers, with the last
    values computed."""
    spec = {"window": "1h", "metrics": ["orders"], "cache_s": 0.5}
    with served(tmp_path, packs_with(tmp_path, observe=spec)) as (rt, client, key):
        post(client, key, recent_orders([100, 200]))
        rt.loader.drain()
        first = client.get("/metrics").text
        rt.warehouse.execute(  # the table disappears under the running server
            exp.Alter(
                this=exp.to_table("marketplace.marketplace_events"),
                kind="TABLE",
                actions=[exp.AlterRename(this=exp.to_table("gone"))],
            )
        )
        deadline = time.monotonic() + 30
        while True:
            r = client.get("/metrics")
            failures = find(r.text, "gristmill_pack_metric_failures_total", pack="marketplace")
            if failures[0].value > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    assert r.status_code == 200
    assert failures[0].value >= 1
    for text in (first, r.text):
        assert [s.value for s in find(text, "gristmill_pack_metric", metric="orders")] == [2]
