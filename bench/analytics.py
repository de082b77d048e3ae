"""Issue 3 figures: vendor view latency through rollups vs raw rows at 10M and 100M events,
rollup refresh time per 1M new events, and RSS.

Events are generated inside DuckDB with SQL (in time order, as ingestion would write them);
the same generator feeds the rollup full rebuild. Latency is measured in-process on the view
code path (planner + warehouse), not over HTTP, so it is the query cost alone.
"""

from __future__ import annotations

import random
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import PACKS, pct
from gristmill.api.routers.views import answer_view
from gristmill.auth.permissions import Principal
from gristmill.config import Settings
from gristmill.metrics import planner
from gristmill.rollup.spec import full_rebuild
from gristmill.runtime import Runtime
from gristmill.warehouse.duckdb import client as duck

VENDORS = 40
BUYERS = 400
DAYS = 90

GENERATE = """
INSERT INTO marketplace.marketplace_events
SELECT
  'e' || i AS event_id,
  t.event_type,
  1, occurred, occurred, now(), 'bench', NULL, NULL, NULL, 'order', 'o' || (i // 3),
  '{}', NULL,
  'o' || (i // 3),
  's_' || lpad(CAST(floor(pow(random(), 1.6) * $buyers) AS VARCHAR), 4, '0'),
  'v_' || lpad(CAST(floor(pow(random(), 1.8) * $vendors) AS VARCHAR), 3, '0'),
  CAST(1000 + floor(random() * 120000) AS BIGINT)
FROM (
  SELECT i, $start + to_microseconds(CAST(i * $step AS BIGINT)) AS occurred
  FROM range($lo, $hi) r(i)
) g, LATERAL (SELECT CASE WHEN i % 10 < 5 THEN 'order_created'
                          WHEN i % 10 < 9 THEN 'order_paid'
                          ELSE 'cash_collected' END AS event_type) t
"""


def _fill(rt: Runtime, n: int, end_us: int) -> float:
    cur = rt.warehouse._cur()
    span = DAYS * 86400 * 1_000_000
    start = end_us - span
    t0 = time.perf_counter()
    chunk = 5_000_000
    for lo in range(0, n, chunk):
        cur.execute(
            GENERATE,
            {
                "buyers": BUYERS,
                "vendors": VENDORS,
                "lo": lo,
                "hi": min(n, lo + chunk),
                "step": span / n,
                "start": _ts(start),
            },
        ).fetchall()
    return time.perf_counter() - t0


def _ts(us: int) -> Any:
    from gristmill.core.clock import to_datetime

    return to_datetime(us)


def _latency(rt: Runtime, who: Principal, view: str, n: int, raw: bool) -> list[float]:
    pack = rt.packs["marketplace"]
    spec = pack.spec.views[view]
    real = planner.choose_rollup
    if raw:
        planner.choose_rollup = lambda *a: None  # type: ignore[assignment]
    try:
        rng = random.Random(1)
        out = []
        for _ in range(n):
            vendor = f"v_{rng.randrange(VENDORS):03d}"
            p = (
                Principal(
                    kind="secret", role="vendor", pack="marketplace", claims={"store_id": vendor}
                )
                if view == "vendor_analytics"
                else who
            )
            preset = rng.choice(spec.presets)
            t0 = time.perf_counter()
            answer_view(
                rt, p, pack, view, spec, preset=preset, tz="UTC", start=None, end=None, debug=False
            )
            out.append(time.perf_counter() - t0)
        return out
    finally:
        planner.choose_rollup = real  # type: ignore[assignment]


def _refresh_per_million(rt: Runtime, spread_s: float, prefix: str) -> dict[str, Any]:
    """Load 1M new events through the real loader and time the rollup refresh inside it.

    ``spread_s``: how far back the events' times reach (1 h = arriving in order; 3 days =
    late data touching thousands of old buckets)."""
    import orjson

    spent = [0.0]
    real = duck.DuckDBWarehouse._after_insert

    def timed(cur: Any, after: Any) -> None:
        t0 = time.perf_counter()
        real(cur, after)
        spent[0] += time.perf_counter() - t0

    duck.DuckDBWarehouse._after_insert = staticmethod(timed)  # type: ignore[method-assign,assignment]
    try:
        rng = random.Random(2)
        now = time.time()
        n = 1_000_000
        batch = []
        t0 = time.perf_counter()
        for i in range(n):
            ts = (
                now - spread_s + spread_s * i / n
                if spread_s <= 3600
                else (now - rng.random() * spread_s)
            )
            batch.append(
                {
                    "event_id": f"{prefix}-{i}",
                    "event_type": "order_created",
                    "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)),
                    "properties": {
                        "order_id": f"n{i}",
                        "store_id": f"s_{rng.randrange(BUYERS):04d}",
                        "vendor_store_id": f"v_{rng.randrange(VENDORS):03d}",
                        "amount_cents": rng.randrange(100, 100_000),
                    },
                    "schema_version": 1,
                }
            )
            if len(batch) == 1000:
                rt.collector.submit_sync(
                    rt.collector.prepare(
                        pack="marketplace",
                        source="bench",
                        dialect="native",
                        raw=orjson.dumps(batch),
                    )
                )
                batch = []
        rt.loader.drain(timeout_s=3600)
        total = time.perf_counter() - t0
    finally:
        duck.DuckDBWarehouse._after_insert = real  # type: ignore[method-assign]
    return {
        "events": n,
        "spread_s": spread_s,
        "rollup_and_freshness_refresh_s": round(spent[0], 2),
        "collect_and_load_total_s": round(total, 2),
    }


def run_scale(n: int, iterations: int, raw_iterations: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(Settings(data_dir=Path(tmp) / "d", packs_dir=PACKS))
        try:
            end_us = int(time.time() * 1_000_000)
            gen_s = _fill(rt, n, end_us)
            pack = rt.packs["marketplace"]
            t0 = time.perf_counter()
            for stmt in full_rebuild(
                pack, "marketplace_hourly", pack.spec.rollups["marketplace_hourly"]
            ):
                rt.warehouse.execute(stmt)
            rebuild_s = time.perf_counter() - t0
            admin = Principal(kind="secret", role="admin", pack="marketplace")
            out: dict[str, Any] = {
                "events": n,
                "generate_s": round(gen_s, 1),
                "rollup_full_rebuild_s": round(rebuild_s, 2),
            }
            for view in ("vendor_analytics", "admin_analytics"):
                fast = _latency(rt, admin, view, iterations, raw=False)
                slow = _latency(rt, admin, view, raw_iterations, raw=True)
                out[view] = {
                    "rollup_p50_ms": round(pct(fast, 50) * 1000, 1),
                    "rollup_p95_ms": round(pct(fast, 95) * 1000, 1),
                    "raw_p50_ms": round(pct(slow, 50) * 1000, 1),
                    "raw_p95_ms": round(pct(slow, 95) * 1000, 1),
                    "speedup_p50": round(pct(slow, 50) / pct(fast, 50), 1),
                }
            out["refresh_in_order"] = _refresh_per_million(rt, 3600, "inorder")
            out["refresh_late_3d"] = _refresh_per_million(rt, 3 * 86400, "late")
            out["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            db = Path(tmp) / "d" / "warehouse.duckdb"
            out["warehouse_mb"] = round(db.stat().st_size / 1e6)
        finally:
            rt.stop()
    return out
