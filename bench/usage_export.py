"""Part 3 of the usage benchmark: the finance export of one month at 10M usage events.

Run on the warehouse part 2 built (``bench/usage_views.py``), after its runtime stopped. Each
side runs in a fresh child process so its peak RSS (``VmHWM``) is its own:

* **Gristmill**: ``ExportService`` as the route calls it — a ``finance_monthly`` job for the
  month, run by the worker (the metric layer through the daily rollup, CSV with the manifest,
  sha256, and the automatic reconciliation against the metric layer's totals).
* **Baseline**: DuckDB's own ``COPY (SELECT … GROUP BY day, org, model) TO 'x.csv'`` over the
  raw rows of the same month — the engine's limit for the same file, with no rollup, no
  manifest and no reconciliation.

Run alone: ``python -m bench.usage_export DATA_DIR 2026-11`` (on a data directory of part 2).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import PACKS
from bench.feeds import _rss_mb

PACK = "usage_metering"

BASELINE = """
COPY (
    SELECT CAST(occurred_at AT TIME ZONE 'UTC' AS DATE) AS day, org_id, model,
           count(*) AS requests, sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out,
           sum(cached_tokens) AS cached_tokens, sum(spend_micros) AS spend_micros,
           count(*) FILTER (WHERE spend_micros IS NULL) AS unpriced_requests
    FROM usage.usage_events
    WHERE occurred_at >= $start AND occurred_at < $end
    GROUP BY ALL ORDER BY ALL
) TO '{out}' (HEADER)
"""


def _month(period: str) -> tuple[datetime, datetime]:
    y, m = (int(x) for x in period.split("-"))
    start = datetime(y, m, 1, tzinfo=UTC)
    end = datetime(y + (m == 12), m % 12 + 1, 1, tzinfo=UTC)
    return start, end


def child_gristmill(data: Path, period: str) -> dict[str, Any]:
    from gristmill.auth.permissions import Principal
    from gristmill.config import Settings
    from gristmill.runtime import Runtime

    rt = Runtime(Settings(data_dir=data, packs_dir=PACKS, packs=[PACK]))
    try:
        who = Principal(kind="secret", role="platform_admin", pack=PACK)
        t0 = time.perf_counter()
        job = rt.exports.create_metrics_job(who, PACK, "finance_monthly", period=period)
        rt.exports.run_pending()
        seconds = time.perf_counter() - t0
        done = rt.exports.job(who, job.id)
        return {
            "seconds": round(seconds, 2),
            "peak_rss_mb": _rss_mb(),
            "status": done.status,
            "rows": done.rows,
            "bytes": done.bytes,
            "reconciled": done.reconciled,
            "requests": (done.totals or {}).get("requests"),
            "spend_micros": (done.totals or {}).get("spend_micros"),
        }
    finally:
        rt.stop()


def child_duckdb(data: Path, period: str) -> dict[str, Any]:
    import duckdb

    start, end = _month(period)
    out = data.parent / f"baseline-{period}.csv"
    con = duckdb.connect(str(data / "warehouse.duckdb"), read_only=True)
    t0 = time.perf_counter()
    con.execute(BASELINE.format(out=out), {"start": start, "end": end})
    seconds = time.perf_counter() - t0
    rows = sum(1 for _ in out.open()) - 1
    return {
        "seconds": round(seconds, 2),
        "peak_rss_mb": _rss_mb(),
        "rows": rows,
        "bytes": out.stat().st_size,
    }


def _child(kind: str, data: Path, period: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.usage_export", "--child", kind, str(data), period],
        capture_output=True,
        text=True,
        check=True,
        timeout=3600,
    )
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def finance_export(data: Path, period: str) -> dict[str, Any]:
    """Both sides on the same month of the same warehouse; the job must reconcile."""
    ours = _child("gristmill", data, period)
    base = _child("duckdb", data, period)
    assert ours["status"] == "succeeded", ours
    assert ours["reconciled"], ours
    assert ours["rows"] == base["rows"], (ours, base)
    return {
        "period": period,
        "gristmill": ours,
        "duckdb_copy": base,
        "ratio_seconds": round(ours["seconds"] / max(base["seconds"], 1e-9), 1),
    }


if __name__ == "__main__":
    if sys.argv[1] == "--child":
        fn = child_gristmill if sys.argv[2] == "gristmill" else child_duckdb
        print(json.dumps(fn(Path(sys.argv[3]), sys.argv[4])))
    else:
        print(json.dumps(finance_export(Path(sys.argv[1]), sys.argv[2]), indent=2))
