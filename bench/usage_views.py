"""Part 2 of the usage benchmark (``bench/usage.py``): ``/usage`` and ``/reliability`` at
10M usage events, through the rollups and from rows (the planner's rollup choice turned off).

Rows are written with SQL (``range()``: 50 orgs of skewed size, the demo generator's model
mix, log-normal latency, exponential tokens, spend from the price book's current prices,
``latency_bin`` with the engine's bin formula), then the four rollups built by the engine's own
``full_rebuild``. Each view's code path (planner + DuckDB, in-process, as the route calls it);
both paths' answers are checked equal. ``/usage`` also with a ``project_id`` filter, which no
rollup has (rows by necessity).
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import PACKS, pct
from bench.usage_export import finance_export
from gristmill.config import Settings

PACK = "usage_metering"
ORGS = 50
DAYS = 90

# (provider, model, share %, median latency ms, sigma, mean tokens in, mean tokens out,
#  price per 1M input / output / cached tokens, as prices.yaml's current entries)
MODELS = [
    ("openai", "gpt-4o-mini", 40, 600, 0.45, 900, 250, "0.15", "0.60", "0.075"),
    ("openai", "gpt-4o", 22, 1400, 0.5, 1800, 450, "2.50", "10.00", "1.25"),
    ("anthropic", "claude-3-5-sonnet", 15, 1800, 0.5, 2200, 600, "3.00", "15.00", "0.30"),
    ("anthropic", "claude-3-5-haiku", 10, 700, 0.4, 1200, 300, "0.80", "4.00", "0.08"),
    ("google", "gemini-1.5-flash", 8, 500, 0.4, 1500, 350, "0.075", "0.30", "0.01875"),
    ("openai", "o3-mini", 4, 5200, 0.6, 1600, 2400, "1.10", "4.40", "0.55"),
    ("acme", "acme-experimental", 1, 900, 0.5, 800, 200, None, None, None),
]

FILL = """
INSERT INTO usage.usage_events (
    event_id, event_type, schema_version, occurred_at, received_at, loaded_at, source,
    org_id, project_id, api_key_id, model, provider, tokens_in, tokens_out, cached_tokens,
    latency_ms, status, error_code, spend_micros, latency_bin, ingested_at)
WITH g AS (
    SELECT i,
           $start + to_microseconds(CAST(i * $step AS BIGINT)) AS ts,
           'org_' || lpad(CAST(CAST(floor(pow(random(), 2.2) * $orgs) AS INT) AS VARCHAR),
                          3, '0') AS org,
           CAST(hash(i) % 100 AS INT) AS mh,
           random() AS us, 1 - random() AS u1, random() AS u2, 1 - random() AS u3,
           random() AS u4, 1 - random() AS u5
    FROM range($lo, $hi) r(i)
), c AS (
    SELECT g.*, m.*,
           CASE WHEN us < 0.01 THEN 'error' WHEN us < 0.013 THEN 'timeout' ELSE 'ok' END
               AS status,
           greatest(1, CAST(floor(-ln(u3) * m.tin) AS BIGINT)) AS t_in,
           CAST(m.median * exp(m.sigma * sqrt(-2 * ln(u1)) * cos(2 * pi() * u2)) AS BIGINT)
               AS lat
    FROM g JOIN models m ON g.mh BETWEEN m.lo AND m.hi
), d AS (
    SELECT c.*,
           CAST(floor(t_in * [0, 0, 0, 0.25, 0.5, 0.9][CAST(floor(u4 * 6) AS INT) + 1])
                AS BIGINT) AS cached,
           CASE WHEN status = 'ok'
                THEN greatest(1, CAST(floor(-ln(u5) * tout) AS BIGINT)) ELSE 0 END AS t_out
    FROM c
)
SELECT 'req_' || i, 'usage_recorded', 1, ts, ts, ts, 'bench',
       org, org || '_prj_' || (i % 3), org || '_key_' || (i % 4), model, provider,
       t_in, t_out, cached,
       CASE WHEN status = 'timeout' THEN greatest(lat, 30000) ELSE lat END,
       status,
       CASE WHEN status = 'ok' THEN NULL ELSE 'upstream_5xx' END,
       CASE WHEN p_in IS NULL THEN NULL
            ELSE CAST(round((t_in - cached) * p_in + t_out * p_out + cached * p_cached)
                      AS BIGINT) END,
       CASE WHEN lat <= 0 THEN -2147483648
            ELSE CAST(ceil(ln(CASE WHEN status = 'timeout' THEN greatest(lat, 30000)
                                   ELSE lat END) / ln($gamma)) AS BIGINT) END,
       ts
FROM d
"""


def _fill(rt: Any, n: int, end_us: int) -> float:
    """n usage rows over DAYS days in time order, ``models`` as a temp table."""
    from gristmill.core import sketch
    from gristmill.core.clock import to_datetime

    cur = rt.warehouse._cur()
    rows, lo = [], 0
    for prov, model, share, med, sig, tin, tout, p_in, p_out, p_c in MODELS:
        rows.append(
            f"({lo}, {lo + share - 1}, '{prov}', '{model}', {med}, {sig}, {tin}, {tout}, "
            + ", ".join(
                "NULL" if v is None else f"CAST('{v}' AS DECIMAL(18, 6))"
                for v in (p_in, p_out, p_c)
            )
            + ")"
        )
        lo += share
    cur.execute(
        "CREATE OR REPLACE TEMP TABLE models AS SELECT * FROM (VALUES "
        + ", ".join(rows)
        + ") v(lo, hi, provider, model, median, sigma, tin, tout, p_in, p_out, p_cached)"
    )
    span = DAYS * 86400 * 1_000_000
    t0 = time.perf_counter()
    chunk = 2_500_000
    for lo in range(0, n, chunk):
        cur.execute(
            FILL,
            {
                "start": to_datetime(end_us - span),
                "step": span / n,
                "orgs": ORGS,
                "lo": lo,
                "hi": min(n, lo + chunk),
                "gamma": sketch.gamma(0.01),
            },
        ).fetchall()
    return time.perf_counter() - t0


def _timed(fn: Any, iterations: int, seed: int = 5) -> list[float]:
    """Seconds per call of ``fn(org)``, the org drawn from the ten largest (where rows are)."""
    rng = random.Random(seed)
    out = []
    for _ in range(iterations):
        org = f"org_{rng.randrange(10):03d}"
        t0 = time.perf_counter()
        fn(org)
        out.append(time.perf_counter() - t0)
    return out


@contextmanager
def _rows_only(planner: Any) -> Iterator[None]:
    """The planner with its rollup choice turned off: every metric from rows."""
    real = planner.choose_rollup
    planner.choose_rollup = lambda *a: None
    try:
        yield
    finally:
        planner.choose_rollup = real


def _without_clock(answer: dict[str, Any]) -> dict[str, Any]:
    """An answer without what reads the clock (the range's end is now, the freshness)."""
    return {k: v for k, v in answer.items() if k not in ("freshness", "range")}


def views_at_scale(n: int, iterations: int = 100, rows_iterations: int = 10) -> dict[str, Any]:
    from gristmill.api.routers.view_breakdown import Ask, answer_breakdown, answer_reliability
    from gristmill.auth.permissions import Principal
    from gristmill.metrics import planner
    from gristmill.rollup.spec import full_rebuild
    from gristmill.runtime import Runtime

    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(Settings(data_dir=Path(tmp) / "d", packs_dir=PACKS, packs=[PACK]))
        try:
            fill_s = _fill(rt, n, int(time.time() * 1_000_000))
            pack = rt.packs[PACK]
            t0 = time.perf_counter()
            for name, r in pack.spec.rollups.items():
                for stmt in full_rebuild(pack, name, r, rt.warehouse.dialect):
                    rt.warehouse.execute(stmt)
            rebuild_s = time.perf_counter() - t0
            who = Principal(kind="secret", role="platform_admin", pack=PACK)
            usage, reliability = pack.spec.views["usage"], pack.spec.views["reliability"]

            def usage_view(preset: str, **query: str) -> Any:
                return lambda org: answer_breakdown(
                    rt, who, pack, usage, Ask({"orgId": org}, query, "day", preset)
                )

            def reliability_view(preset: str) -> Any:
                return lambda org: answer_reliability(
                    rt, who, pack, reliability, Ask({"orgId": org}, grain="hour", preset=preset)
                )

            cases = {
                "usage_7d_day": usage_view("7d"),
                "usage_90d_day": usage_view("90d"),
                "reliability_1d_hour": reliability_view("1d"),
                "reliability_7d_hour": reliability_view("7d"),
            }
            out: dict[str, Any] = {
                "events": n,
                "fill_s": round(fill_s, 1),
                "rollups_full_rebuild_s": round(rebuild_s, 1),
            }
            for name, fn in cases.items():
                fast = _timed(fn, iterations)
                with _rows_only(planner):
                    slow = _timed(fn, rows_iterations)
                    same = _without_clock(fn("org_000"))
                assert _without_clock(fn("org_000")) == same, f"{name}: rollups and rows differ"
                out[name] = {
                    "rollup_p50_ms": round(pct(fast, 50) * 1000, 1),
                    "rollup_p95_ms": round(pct(fast, 95) * 1000, 1),
                    "rows_p50_ms": round(pct(slow, 50) * 1000, 1),
                    "rows_p95_ms": round(pct(slow, 95) * 1000, 1),
                    "speedup_p50": round(pct(slow, 50) / pct(fast, 50), 1),
                }
                print("usage views", name, out[name], flush=True)
            proj = _timed(
                lambda org: usage_view("7d", project_id=f"{org}_prj_1")(org), rows_iterations
            )
            out["usage_7d_project_filter"] = {
                "rows_p50_ms": round(pct(proj, 50) * 1000, 1),
                "rows_p95_ms": round(pct(proj, 95) * 1000, 1),
            }
            db = Path(tmp) / "d" / "warehouse.duckdb"
            out["warehouse_mb"] = round(db.stat().st_size / 1e6)
        finally:
            rt.stop()
        # Part 3: the finance export of the last whole month, in child processes.
        last = datetime.now(UTC).replace(day=1) - timedelta(days=1)
        out["finance_export"] = finance_export(Path(tmp) / "d", f"{last.year}-{last.month:02d}")
        print("usage finance export", out["finance_export"], flush=True)
    return out
