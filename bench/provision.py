"""Provisioning plan time (issue 13): how long ``gristmill provision`` takes to read the live
catalogue and diff it against the packs, on a warehouse with three packs provisioned
(marketplace, sales_feeds, usage_metering), per engine that runs here.

Per engine, after one ``--apply``: the catalogue read alone, the whole plan (render the DDL,
parse it back, read the catalogue, diff, build and hash the JSON), and the offline plan (no
catalogue), each the median of ``iterations`` runs in this process. The plan must be empty:
a figure for a plan that still has changes would measure the wrong thing.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import PACKS
from gristmill.config import Settings
from gristmill.pack.loader import load_packs
from gristmill.warehouse import provision as pv
from gristmill.warehouse.registry import open_warehouse

PACK_NAMES = ["marketplace", "sales_feeds", "usage_metering"]


def _median_ms(fn: Callable[[], object], iterations: int) -> float:
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times) * 1000, 1)


@contextmanager
def _warehouse_settings(engine: str, tmp: Path) -> Iterator[Settings | None]:
    base: dict[str, Any] = {"data_dir": tmp, "packs_dir": PACKS, "packs": PACK_NAMES}
    if engine != "postgres":
        yield Settings(**base, warehouse={"type": engine})
        return
    try:
        import psycopg

        name = f"gm_bench_{int(time.time())}"
        admin = "host=127.0.0.1 dbname=postgres user=postgres"
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
    except Exception:
        yield None
        return
    try:
        dsn = f"host=127.0.0.1 dbname={name} user=postgres"
        yield Settings(**base, warehouse={"type": "postgres", "dsn": dsn})
    finally:
        with psycopg.connect(admin, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure(engine: str, iterations: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as d, _warehouse_settings(engine, Path(d)) as settings:
        if settings is None:
            return {"engine": engine, "skipped": "no PostgreSQL on 127.0.0.1:5432"}
        packs = list(load_packs(PACKS, PACK_NAMES).values())
        target = settings.warehouse.type
        wh = open_warehouse(settings)
        try:
            want = pv.desired(target, packs, settings)
            first = pv.make_plan(
                target, packs, settings, pv.read_catalogue(wh, target, want), want, live=True
            )
            pv.apply(wh, first)

            def plan() -> pv.Plan:
                w = pv.desired(target, packs, settings)
                cat = pv.read_catalogue(wh, target, w)
                return pv.make_plan(target, packs, settings, cat, w, live=True)

            assert plan().changes == (), "the plan after apply must be empty"
            return {
                "engine": engine,
                "tables": len(want.tables),
                "statements_applied": len(first.statements),
                "catalogue_read_ms": _median_ms(
                    lambda: pv.read_catalogue(wh, target, want), iterations
                ),
                "plan_ms": _median_ms(plan, iterations),
                "offline_plan_ms": _median_ms(
                    lambda: pv.make_plan(
                        target,
                        packs,
                        settings,
                        pv.EMPTY,
                        pv.desired(target, packs, settings),
                        live=False,
                    ),
                    iterations,
                ),
            }
        finally:
            wh.close()


def run(engines: list[str], iterations: int = 20) -> list[dict[str, Any]]:
    return [measure(e, iterations) for e in engines]


def render(results: dict[str, Any]) -> str:
    lines = [
        f"Run {results['when']} on {results['machine']['cores']} cores; "
        f"{', '.join(PACK_NAMES)} provisioned; median of 20 runs.",
        "",
        "| engine | tables | catalogue read | whole plan (live) | offline plan |",
        "|---|---|---|---|---|",
    ]
    for r in results["provision"]:
        if "skipped" in r:
            lines.append(f"| {r['engine']} | — | {r['skipped']} | — | — |")
            continue
        lines.append(
            f"| {r['engine']} | {r['tables']} | {r['catalogue_read_ms']} ms | "
            f"{r['plan_ms']} ms | {r['offline_plan_ms']} ms |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys

    engines = sys.argv[1].split(",") if len(sys.argv) > 1 else ["duckdb", "clickhouse", "postgres"]
    print(json.dumps(run(engines), indent=2))
