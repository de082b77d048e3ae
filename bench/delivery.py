"""Delivery pack (seed 002): driver-telemetry ingest end to end beside the native marketplace
rate in the same run, and the lifecycle view at scale.

Part 1: one server serving both packs; marketplace events, then ``location_updated`` pings
(small events from many drivers), each POSTed in 100-event batches by two client processes,
timed from the first request until everything is loaded.

Part 2: ``n`` order-lifecycle rows written with SQL (orders of 50 branches of skewed size
over 30 days, four events each: created, accepted, picked up, delivered, with log-normal-ish
gaps), then the lifecycle views (branch, 7 days; every branch, 30 days) timed in process as
the route calls them. Pairing needs the rows, so the lifecycle is answered from rows; beside
it the ``deliveries`` breakdown (distinct orders delivered per branch) through its rollup
and from rows (the planner's rollup choice turned off), both answers checked equal.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import PACKS, blast, bodies, pct
from bench.usage_views import _rows_only, _without_clock
from gristmill.config import Settings
from gristmill.demo.process import ServerProcess, free_port
from gristmill.meta.store import MetaStore

PACK = "delivery"
BRANCHES = 50
DAYS = 30


def _pings(n: int, seed: int = 3) -> list[dict[str, Any]]:
    """``n`` pings of 500 drivers, 30 s apart, moving along straight lines."""
    rnd = random.Random(seed)
    t0 = time.time() - n / 500 * 30
    out = []
    for i in range(n):
        d = i % 500
        k = i // 500
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t0 + k * 30)) + f".{d:03d}Z"
        out.append(
            {
                "event_id": f"p{i}",
                "event_type": "location_updated",
                "occurred_at": at,
                "properties": {
                    "driver_id": f"drv_{d:03d}",
                    "branch_id": f"br_{d % BRANCHES:02d}",
                    "lat": round(51.5 + d * 0.001 + k * 0.0005 + rnd.gauss(0, 1e-5), 6),
                    "lon": round(-0.1 + k * 0.0003, 6),
                    "accuracy_m": 8.5,
                },
            }
        )
    return out


def ingest_side_by_side(n: int, batch: int = 100, clients: int = 2) -> dict[str, Any]:
    from gristmill.demo.marketplace import DemoConfig, generate

    market = generate(DemoConfig(events=n, duplicate_rate=0, invalid_rate=0, seed=3)).events
    pings = _pings(n)
    out: dict[str, Any] = {"events": n, "batch_size": batch}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        meta = MetaStore(f"sqlite:///{data / 'meta.sqlite'}")
        keys = {
            p: meta.create_key("write", p, pack=p, source="bench")[1] for p in ("marketplace", PACK)
        }
        op = meta.create_key("secret", "bench", role="operator")[1]
        meta.close()
        env = {
            "GRISTMILL_PACKS": '["marketplace", "delivery"]',
            "GRISTMILL_RATE_LIMITS__ENABLED": "false",
        }
        server = ServerProcess(data, free_port(), packs_dir=PACKS, env=env)
        server.start()
        try:
            import httpx

            def loaded() -> None:
                while True:
                    st = httpx.get(
                        server.url + "/v1/pipeline/stats",
                        headers={"Authorization": f"Bearer {op}"},
                        timeout=30,
                    ).json()
                    if st["totals"]["in_flight"] == 0:
                        return
                    time.sleep(0.02)

            for name, pack, events in (
                ("marketplace", "marketplace", market),
                ("driver_telemetry", PACK, pings),
            ):
                payloads = bodies(events, batch)
                t0 = time.perf_counter()
                statuses = blast(server.port, keys[pack], payloads, clients)
                acked = time.perf_counter() - t0
                loaded()
                total = time.perf_counter() - t0
                size = sum(len(b) for b in payloads) / len(events)
                out[name] = {
                    "statuses": statuses,
                    "bytes_per_event": round(size),
                    "acked_events_per_s": round(len(events) / acked),
                    "end_to_end_events_per_s": round(len(events) / total),
                }
                print("delivery ingest", name, out[name], flush=True)
        finally:
            server.stop()
    out["telemetry_vs_marketplace"] = round(
        out["driver_telemetry"]["end_to_end_events_per_s"]
        / out["marketplace"]["end_to_end_events_per_s"],
        2,
    )
    return out


FILL = """
INSERT INTO delivery.analytics_order_lifecycle_events (
    event_id, event_type, schema_version, occurred_at, received_at, loaded_at, source,
    entity_type, entity_id, properties, order_id, branch_id, customer_id, driver_id, status,
    actor_type, ingested_at)
WITH o AS (
    SELECT i,
           $start + to_microseconds(CAST(i * $step AS BIGINT)) AS c,
           'br_' || lpad(CAST(CAST(floor(pow(random(), 1.6) * $branches) AS INT) AS VARCHAR),
                         2, '0') AS br,
           random() AS u1, random() AS u2, random() AS u3
    FROM range($lo, $hi) r(i)
), s AS (
    SELECT o.*,
           c + to_microseconds(CAST((60 + 900 * u1 * u1) * 1e6 AS BIGINT)) AS a,
           c + to_microseconds(CAST((1500 + 1800 * u2) * 1e6 AS BIGINT)) AS p,
           c + to_microseconds(CAST((3600 + 10800 * u3 * u3) * 1e6 AS BIGINT)) AS d
    FROM o
), e AS (
    SELECT s.*, v.k, v.et, v.st,
           CASE v.k WHEN 1 THEN c WHEN 2 THEN a WHEN 3 THEN p ELSE d END AS ts
    FROM s, (VALUES (1, 'created', NULL), (2, 'request_accepted', NULL),
                    (3, 'delivery_status_changed', 'picked_up'),
                    (4, 'delivery_status_changed', 'delivered')) v(k, et, st)
)
SELECT 'ev_' || i || '_' || k, et, 1, ts, ts, ts, 'bench', 'order', 'ord_' || i, '{}',
       'ord_' || i, br, 'cus_' || (i % 100000),
       CASE WHEN k > 1 THEN br || '_drv_' || (i % 40) END, st, 'system', ts
FROM e ORDER BY ts
"""


def _timed(fn: Any, iterations: int, seed: int = 5) -> list[float]:
    rng = random.Random(seed)
    out = []
    for _ in range(iterations):
        branch = f"br_{rng.randrange(5):02d}"  # the largest branches
        t0 = time.perf_counter()
        fn(branch)
        out.append(time.perf_counter() - t0)
    return out


def _ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(values, 50) * 1000, 1), "p95_ms": round(pct(values, 95) * 1000, 1)}


def lifecycle_at_scale(n: int, iterations: int = 20) -> dict[str, Any]:
    from gristmill.api.routers.view_breakdown import Ask, answer_breakdown
    from gristmill.api.routers.view_entities import answer_lifecycle
    from gristmill.api.routers.view_kinds import view_range
    from gristmill.auth.permissions import Principal
    from gristmill.core.clock import to_datetime
    from gristmill.metrics import planner
    from gristmill.rollup.spec import full_rebuild
    from gristmill.runtime import Runtime

    orders = n // 4
    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(Settings(data_dir=Path(tmp) / "d", packs_dir=PACKS, packs=[PACK]))
        try:
            cur = rt.warehouse._cur()
            span = DAYS * 86400 * 1_000_000
            end_us = int(time.time() * 1_000_000) - 6 * 3600 * 1_000_000
            t0 = time.perf_counter()
            for lo in range(0, orders, 1_000_000):
                cur.execute(
                    FILL,
                    {
                        "start": to_datetime(end_us - span),
                        "step": span / orders,
                        "branches": BRANCHES,
                        "lo": lo,
                        "hi": min(orders, lo + 1_000_000),
                    },
                ).fetchall()
            fill_s = time.perf_counter() - t0
            pack = rt.packs[PACK]
            t0 = time.perf_counter()
            for name, r in pack.spec.rollups.items():
                for stmt in full_rebuild(pack, name, r, rt.warehouse.dialect):
                    rt.warehouse.execute(stmt)
            rebuild_s = time.perf_counter() - t0
            who = Principal(kind="secret", role="operations", pack=PACK)
            views = pack.spec.views
            out: dict[str, Any] = {
                "events": orders * 4,
                "orders": orders,
                "fill_s": round(fill_s, 1),
                "rollups_full_rebuild_s": round(rebuild_s, 1),
            }
            cases = {
                "lifecycle_branch_7d": lambda b: answer_lifecycle(
                    rt, who, pack, views["branch_lifecycle"], Ask({"branchId": b}, preset="7d")
                ),
                "lifecycle_all_30d": lambda b: answer_lifecycle(
                    rt, who, pack, views["lifecycle"], Ask({}, preset="30d")
                ),
            }
            for name, fn in cases.items():
                n_iter = iterations if name.endswith("7d") else max(3, iterations // 4)
                out[name] = {"path": "rows", "iterations": n_iter, **_ms(_timed(fn, n_iter))}
                print("delivery views", name, out[name], flush=True)
            deliveries = views["deliveries"]

            def dl(b: str) -> Any:
                return answer_breakdown(rt, who, pack, deliveries, Ask({}, {}, "day", "30d"))

            fast = _timed(dl, iterations)
            with _rows_only(planner):
                slow = _timed(dl, max(3, iterations // 4))
                same = _without_clock(dl("br_00"))
            assert _without_clock(dl("br_00")) == same, "deliveries: rollup and rows differ"
            out["deliveries_all_30d"] = {
                "rollup": _ms(fast),
                "rows": _ms(slow),
                "speedup_p50": round(pct(slow, 50) / pct(fast, 50), 1),
            }
            print("delivery views deliveries", out["deliveries_all_30d"], flush=True)
            # A count (orders created per branch and day): what hourly buckets summarise best.
            from gristmill.api.query import metric_query
            from gristmill.metrics.service import run as run_metrics

            def created(b: str) -> Any:
                rng = view_range(deliveries, "30d", None, None, "UTC")
                q = metric_query(
                    rt,
                    who,
                    pack,
                    metrics=["orders_created"],
                    rng=rng,
                    grain="day",
                    group_by=["branch_id"],
                    filters=[],
                )
                return run_metrics(rt.warehouse, q).rows

            fast = _timed(created, iterations)
            with _rows_only(planner):
                slow = _timed(created, max(3, iterations // 4))
                same = created("br_00")
            assert created("br_00") == same, "orders_created: rollup and rows differ"
            out["orders_created_30d_by_branch_day"] = {
                "rollup": _ms(fast),
                "rows": _ms(slow),
                "speedup_p50": round(pct(slow, 50) / pct(fast, 50), 1),
            }
            print("delivery views orders_created", out["orders_created_30d_by_branch_day"])
            db = Path(tmp) / "d" / "warehouse.duckdb"
            out["warehouse_mb"] = round(db.stat().st_size / 1e6)
        finally:
            rt.stop()
    return out


def run(ingest_events: int, view_events: int, iterations: int = 8) -> dict[str, Any]:
    return {
        "ingest": ingest_side_by_side(ingest_events),
        "views": lifecycle_at_scale(view_events, iterations),
    }


def render(results: dict[str, Any]) -> str:
    r = results["delivery"]
    i, v = r["ingest"], r["views"]
    m, t = i["marketplace"], i["driver_telemetry"]
    lines = [
        f"Run {results['when']} on {results['machine']['cores']} cores.",
        "",
        f"| ingest, {i['events']:,} events in {i['batch_size']}-event batches, same server "
        "| bytes/event | acked | end to end (loaded) |",
        "|---|---|---|---|",
        f"| marketplace (native) | {m['bytes_per_event']} | {m['acked_events_per_s']:,}/s "
        f"| {m['end_to_end_events_per_s']:,}/s |",
        f"| driver telemetry (`location_updated`) | {t['bytes_per_event']} | "
        f"{t['acked_events_per_s']:,}/s | {t['end_to_end_events_per_s']:,}/s "
        f"({i['telemetry_vs_marketplace']:.2f}x) |",
        "",
        f"{v['events']:,} lifecycle events ({v['orders']:,} orders, {BRANCHES} branches, "
        f"{DAYS} days; fill {v['fill_s']} s, rollup rebuild {v['rollups_full_rebuild_s']} s, "
        f"DuckDB file {v['warehouse_mb']} MB):",
        "",
        "| view | path | p50 | p95 |",
        "|---|---|---|---|",
    ]
    for name in ("lifecycle_branch_7d", "lifecycle_all_30d"):
        x = v[name]
        lines.append(f"| {name} | rows (pairing) | {x['p50_ms']} ms | {x['p95_ms']} ms |")
    for name in ("deliveries_all_30d", "orders_created_30d_by_branch_day"):
        d = v[name]
        lines.append(
            f"| {name} | rollup | {d['rollup']['p50_ms']} ms | {d['rollup']['p95_ms']} ms |"
        )
        lines.append(
            f"| {name} | rows | {d['rows']['p50_ms']} ms | {d['rows']['p95_ms']} ms "
            f"(rollup/rows p50: {d['speedup_p50']}x) |"
        )
    return "\n".join(lines)
