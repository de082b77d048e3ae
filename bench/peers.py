"""Issue 14 figures: Gristmill's loader beside **dlt**, the library a data engineer already
knows, on the very same Arrow rows and batch sizes into DuckDB, in the same run.

The demo traffic goes through the real collector into the log; the log is read into the
loader's own batches (``build_batch``, ``loader.max_events`` events each). Then, each into a
fresh DuckDB file, timed from the first batch to the last commit:

- **raw**: ``INSERT INTO t SELECT * FROM arrow`` per batch — the engine's limit, no guarantees;
- **gristmill commit**: ``warehouse.commit_load`` of those batches — dedupe against every
  earlier batch and source, rollups (delta), freshness, ledger and log offset, one transaction
  per batch;
- **gristmill loader**: the whole loader from the log (frame decode and Arrow build included),
  once from the column frames the collector writes and once from the same events as version 1
  row frames (what logs written before column frames hold; the before of issue 14 item 2);
- **dlt merge**: ``pipeline.run(arrow, write_disposition="merge", primary_key="event_id")`` per
  batch (delete-insert: a re-sent id replaces the stored row; no ledger, no rollups);
- **dlt append**: ``write_disposition="append"`` per batch (no dedupe at all).

dlt's anonymous telemetry is switched off (no network here) and its working files go to the
temporary directory.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from bench.common import PACKS, checkpointed, collect, log_batches, raw_duckdb_append
from gristmill.config import Settings
from gristmill.core.envelope import encode_row_frame
from gristmill.demo.marketplace import DemoConfig, generate
from gristmill.log.base import LogRecord
from gristmill.rollup.maintain import after_insert
from gristmill.runtime import Runtime
from gristmill.warehouse.base import LoadBatch

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")


def _tables(batches: list[LoadBatch]) -> list[tuple[str, pa.Table]]:
    return [
        (tr.table, tr.rows.drop_columns(["_dedupe_scope"])) for lb in batches for tr in lb.tables
    ]


def _dlt(tmp: Path, tables: list[tuple[str, pa.Table]], disposition: str) -> tuple[float, int]:
    import dlt

    pipeline = dlt.pipeline(
        pipeline_name=f"bench_{disposition}",
        pipelines_dir=str(tmp / f"dlt-{disposition}-state"),
        destination=dlt.destinations.duckdb(str(tmp / f"dlt-{disposition}.duckdb")),
        dataset_name="marketplace",
    )
    t0 = time.perf_counter()
    for name, arrow in tables:
        if disposition == "merge":
            pipeline.run(arrow, table_name=name, write_disposition="merge", primary_key="event_id")
        else:
            pipeline.run(arrow, table_name=name, write_disposition="append")
    elapsed = time.perf_counter() - t0
    with pipeline.sql_client() as c:
        rows = sum(
            int(c.execute_sql(f"SELECT count(*) FROM {n}")[0][0]) for n in {n for n, _ in tables}
        )
    return elapsed, rows


def run(events: int) -> dict[str, Any]:
    traffic = generate(DemoConfig(events=events, duplicate_rate=0.02, invalid_rate=0, seed=11))
    out: dict[str, Any] = {"events": len(traffic.events)}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        rt = Runtime(Settings(data_dir=tmp / "loader", packs_dir=PACKS, packs=["marketplace"]))
        try:
            frames = [p.frame for p in collect(rt, traffic.events)]
            rows_frames = [
                LogRecord(f.pack, f.source, f.count, f.received_at, encode_row_frame(f))
                for f in frames
            ]
            batches = log_batches(rt, "peers")
            t0 = time.perf_counter()
            rt.loader.drain(timeout_s=3600)
            checkpointed(rt)
            out["gristmill_loader_s"] = time.perf_counter() - t0
        finally:
            rt.stop()
        rt = Runtime(Settings(data_dir=tmp / "rows", packs_dir=PACKS, packs=["marketplace"]))
        try:
            for i in range(0, len(rows_frames), 500):
                rt.log.append(rows_frames[i : i + 500])
            t0 = time.perf_counter()
            rt.loader.drain(timeout_s=3600)
            checkpointed(rt)
            out["gristmill_loader_v1_s"] = time.perf_counter() - t0
        finally:
            rt.stop()
        tables = _tables(batches)
        rows = sum(t.num_rows for _, t in tables)
        out["rows"] = rows
        out["batches"] = len(batches)
        out["raw_s"] = raw_duckdb_append(tmp / "raw.duckdb", tables)
        rt = Runtime(Settings(data_dir=tmp / "commit", packs_dir=PACKS, packs=["marketplace"]))
        try:
            after = after_insert(rt.packs, rt.warehouse.dialect)
            for lb in batches:
                lb.tables = [replace(tr, after=after[(tr.pack.name, tr.table)]) for tr in lb.tables]
            t0 = time.perf_counter()
            for lb in batches:
                rt.warehouse.commit_load(lb)
            checkpointed(rt)
            out["gristmill_commit_s"] = time.perf_counter() - t0
        finally:
            rt.stop()
        out["dlt_merge_s"], out["dlt_merge_rows"] = _dlt(tmp, tables, "merge")
        out["dlt_append_s"], out["dlt_append_rows"] = _dlt(tmp, tables, "append")
    keys = ("raw", "gristmill_commit", "gristmill_loader", "gristmill_loader_v1")
    for k in (*keys, "dlt_merge", "dlt_append"):
        out[f"{k}_rows_per_s"] = round(rows / out[f"{k}_s"])
        out[f"{k}_s"] = round(out[f"{k}_s"], 2)
    return out


def render(results: dict[str, Any]) -> str:
    r = results["peers"]
    rows = [
        ("DuckDB raw Arrow append (no guarantees)", "raw", ""),
        (
            "Gristmill `commit_load` (dedupe across batches and sources, delta rollups, "
            "freshness, ledger, offset; one transaction per batch)",
            "gristmill_commit",
            "",
        ),
        (
            "Gristmill loader from the log (adds frame decode and Arrow build)",
            "gristmill_loader",
            "column frames (version 3: typed chunks)",
        ),
        (
            "Gristmill loader from a log of row frames (before column frames)",
            "gristmill_loader_v1",
            "version 1 frames, same events",
        ),
        (
            "dlt `merge` on `event_id` (delete-insert; a re-sent id replaces the row)",
            "dlt_merge",
            f"{r['dlt_merge_rows']:,} rows kept",
        ),
        ("dlt `append` (no dedupe)", "dlt_append", f"{r['dlt_append_rows']:,} rows kept"),
    ]
    lines = [
        f"{r['events']:,} demo events (2% re-sent) → {r['rows']:,} rows in {r['batches']} "
        "batches, the same Arrow tables for every loader, each into a fresh DuckDB file.",
        "",
        "| loader | seconds | rows/s | vs raw | vs dlt merge | note |",
        "|---|---|---|---|---|---|",
    ]
    for label, key, note in rows:
        lines.append(
            f"| {label} | {r[f'{key}_s']} | {r[f'{key}_rows_per_s']:,} | "
            f"{r[f'{key}_rows_per_s'] / r['raw_rows_per_s']:.0%} | "
            f"{r[f'{key}_rows_per_s'] / r['dlt_merge_rows_per_s']:.1f}x | {note} |"
        )
    return "\n".join(lines)
