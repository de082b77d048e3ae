"""Issue 14 (freshness at scale): what a load's duplicate check costs as the dedupe window
fills, with the keys in memory (``warehouse.key_index``, the default) and as the join over the
key table (before).

Per key-table size: a DuckDB warehouse whose marketplace key table holds that many keys
(inserted by SQL; ``first_seen`` now, so the prune keeps them), copied once per mode; then the
same batches of demo events (2% re-sent, some across batches), built from the log by the
loader's own ``build_batch``, go through ``commit_load`` with rollups and freshness, timed
per commit. The first commit of the in-memory mode also reads the key table into memory: it
is shown apart. Both modes must report the same fresh and duplicate counts.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import PACKS, collect, log_batches
from gristmill.config import LoaderSettings, Settings
from gristmill.demo.marketplace import DemoConfig, generate
from gristmill.rollup.maintain import after_insert
from gristmill.runtime import Runtime
from gristmill.warehouse.base import LoadBatch
from gristmill.warehouse.duckdb.client import DuckDBWarehouse


def _batches(tmp: Path, events: int, batch: int) -> list[LoadBatch]:
    traffic = generate(DemoConfig(events=events, duplicate_rate=0.02, invalid_rate=0, seed=5))
    rt = Runtime(
        Settings(
            data_dir=tmp / "log",
            packs_dir=PACKS,
            packs=["marketplace"],
            loader=LoaderSettings(max_events=batch),
        )
    )
    try:
        collect(rt, traffic.events)
        return log_batches(rt, "dedupe", batch, after_insert(rt.packs, rt.warehouse.dialect))
    finally:
        rt.stop()


def _base(tmp: Path, keys: int) -> Path:
    """A provisioned warehouse whose marketplace key table holds ``keys`` keys."""
    rt = Runtime(Settings(data_dir=tmp / f"base{keys}", packs_dir=PACKS, packs=["marketplace"]))
    path = rt.settings.warehouse_path
    rt.stop()
    wh = DuckDBWarehouse(path)
    try:
        cur = wh._cur()
        cur.execute(
            "INSERT INTO marketplace._gm_dedupe SELECT md5_number('bench-' || i::VARCHAR), "
            "now() FROM range($n) t(i)",
            {"n": keys},
        ).fetchall()
        cur.execute("CHECKPOINT").fetchall()
    finally:
        wh.close()
    return path


def _mode(
    base: Path, work: Path, batches: list[LoadBatch], key_index: bool, *, warm: bool = False
) -> dict[str, Any]:
    """``warm``: the key set is read by ``Warehouse.warm`` before the first batch, as the
    loader does as it starts (timed apart as ``warm_ms``)."""
    work.mkdir(parents=True, exist_ok=True)
    path = work / "wh.duckdb"
    shutil.copy(base, path)
    wh = DuckDBWarehouse(path, key_index=key_index, checkpoint_threshold="128MB")
    times, fresh, dups, warm_ms = [], 0, 0, None
    try:
        if warm:
            t0 = time.perf_counter()
            wh.warm(list({t.pack.name: t.pack for lb in batches for t in lb.tables}.values()))
            warm_ms = round((time.perf_counter() - t0) * 1000, 1)
        for lb in batches:
            t0 = time.perf_counter()
            r = wh.commit_load(lb)
            times.append(time.perf_counter() - t0)
            fresh += sum(r.loaded.values())
            dups += sum(r.duplicates.values())
    finally:
        wh.close()
        shutil.rmtree(work, ignore_errors=True)
    rest = sorted(times[1:])
    return {
        "warm_ms": warm_ms,
        "first_ms": round(times[0] * 1000, 1),
        "median_ms": round(statistics.median(rest) * 1000, 1),
        "p95_ms": round(rest[int(0.95 * (len(rest) - 1))] * 1000, 1),
        "total_s": round(sum(times), 2),
        "fresh": fresh,
        "duplicates": dups,
    }


def run(key_counts: list[int], events: int = 60_000, batch: int = 6_000) -> dict[str, Any]:
    out: dict[str, Any] = {"events": events, "batch": batch, "sizes": []}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        batches = _batches(tmp, events, batch)
        out["batches"] = len(batches)
        for keys in key_counts:
            base = _base(tmp, keys)
            row: dict[str, Any] = {"keys": keys}
            for name, on in (("join", False), ("index", True)):
                row[name] = _mode(base, tmp / name, batches, on)
            row["warmed"] = _mode(base, tmp / "warmed", batches, True, warm=True)
            counts = {(row[m]["fresh"], row[m]["duplicates"]) for m in ("join", "index", "warmed")}
            assert len(counts) == 1, row
            base.unlink()
            out["sizes"].append(row)
    return out


def render(results: dict[str, Any]) -> str:
    r = results["dedupe"]
    lines = [
        f"Run {results['when']} on {results['machine']['cores']} cores: {r['events']:,} demo "
        f"events (2% re-sent) in {r['batches']} batches of {r['batch']:,}, `commit_load` with "
        "delta rollups and freshness, into a warehouse whose key table already holds the keys "
        "below. Per commit, the first apart (the in-memory mode reads the key table there, "
        "unless `Warehouse.warm` read it before the first batch, as the loader does).",
        "",
        "| keys in the window | join: median / p95 per commit | in memory: median / p95 "
        "| in memory: first commit | warmed: warm-up, then first commit | median saved "
        "| same fresh / duplicates |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in r["sizes"]:
        j, i = s["join"], s["index"]
        w = s.get("warmed")
        warmed = f"{w['warm_ms']} ms, then {w['first_ms']} ms" if w else "—"
        lines.append(
            f"| {s['keys']:,} | {j['median_ms']} / {j['p95_ms']} ms | {i['median_ms']} / "
            f"{i['p95_ms']} ms | {i['first_ms']} ms (join: {j['first_ms']} ms) | {warmed} | "
            f"{j['median_ms'] - i['median_ms']:.1f} ms | {i['fresh']:,} / {i['duplicates']:,} |"
        )
    return "\n".join(lines)
