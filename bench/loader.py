"""(b) Loader rows/s beside a raw DuckDB Arrow append of the same rows (the engine's limit)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import duckdb

from bench.common import PACKS, collect, log_batches
from gristmill.config import Settings
from gristmill.demo.marketplace import DemoConfig, generate
from gristmill.runtime import Runtime


def loader_vs_raw(events: int) -> dict[str, Any]:
    traffic = generate(DemoConfig(events=events, duplicate_rate=0, invalid_rate=0, seed=5))
    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(Settings(data_dir=Path(tmp) / "g", packs_dir=PACKS))
        collect(rt, traffic.events)
        # The same rows the loader will insert, as Arrow tables, for the raw baseline.
        batches = log_batches(rt, "x")
        t0 = time.perf_counter()
        rt.loader.drain(timeout_s=3600)
        loader_s = time.perf_counter() - t0
        rt.stop()

        con = duckdb.connect(str(Path(tmp) / "raw.duckdb"))
        made: set[str] = set()
        t0 = time.perf_counter()
        for lb in batches:
            for tr in lb.tables:
                arrow = tr.rows.drop_columns(["_dedupe_scope"])
                con.register("a", arrow)
                if tr.table not in made:
                    con.execute(f"CREATE TABLE {tr.table} AS SELECT * FROM a LIMIT 0")
                    made.add(tr.table)
                con.execute(f"INSERT INTO {tr.table} SELECT * FROM a")
                con.unregister("a")
        raw_s = time.perf_counter() - t0
        con.close()
    n = len(traffic.events)
    return {
        "events": n,
        "loader_rows_per_s": round(n / loader_s),
        "raw_arrow_append_rows_per_s": round(n / raw_s),
        "ratio_loader_to_raw": round(raw_s / loader_s, 3),
        "note": "loader = decode frames + Arrow build + dedupe anti-join + insert + ledger "
        "+ offset, committed per batch; raw = INSERT of the same Arrow tables",
    }
