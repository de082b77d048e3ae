"""Issue 14 figures: delta rollups against recompute, in the same run, on the same data.

Per engine (DuckDB, and ClickHouse in process through chdb), one warehouse is filled with
``base`` events over 90 days (the SQL generators of bench/warehouses.py) and its rollups built;
the data directory is copied, and each copy loads the same 1M new events through the real
collector and loader — once with ``rollup_mode=recompute`` (every touched bucket rebuilt from
rows, the previous behaviour) and once with ``delta`` (DuckDB: the batch's aggregates appended,
folded every 32 loads; ClickHouse: appended as the batch's part, compacted every 64 loads). Two
shapes: events in time order (the last hour) and late events spread over the last three days,
which is where recompute hurts (each load re-reads three days of rows). The time spent in the
rollup and freshness steps of the loads (DuckDB's folds and ClickHouse's compactions
included) is measured by wrapping the warehouse's hooks; the two copies' rollups, read merged
by key, are compared row for row afterwards.
"""

from __future__ import annotations

import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import orjson

from bench.analytics import BUYERS, VENDORS
from bench.common import PACKS
from bench.warehouses import _generate
from gristmill.config import ClickHouseSettings, DuckDBSettings, LoaderSettings, Settings
from gristmill.rollup.delta import merged
from gristmill.rollup.repair import rebuild
from gristmill.runtime import Runtime
from gristmill.warehouse.base import AfterInsert
from gristmill.warehouse.clickhouse import client as ch
from gristmill.warehouse.clickhouse import compact
from gristmill.warehouse.duckdb import client as duck

MODES = ("recompute", "delta")


ENGINES = ("duckdb", "clickhouse")


def _settings(data: Path, mode: str, engine: str) -> Settings:
    wh: Any = ClickHouseSettings() if engine == "clickhouse" else DuckDBSettings()
    return Settings(
        data_dir=data,
        packs_dir=PACKS,
        packs=["marketplace"],
        warehouse=wh,
        loader=LoaderSettings(rollup_mode=mode),
    )


def _events(n: int, spread_s: float, now: float, prefix: str) -> list[bytes]:
    """``n`` order events as 1,000-event request bodies, the same for every mode."""
    rng = random.Random(7)
    bodies, batch = [], []
    for i in range(n):
        ts = (
            now - spread_s + spread_s * i / n if spread_s <= 3600 else now - rng.random() * spread_s
        )
        batch.append(
            {
                "event_id": f"{prefix}-{i}",
                "event_type": "order_created",
                "schema_version": 1,
                "occurred_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)),
                "properties": {
                    "order_id": f"{prefix}{i}",
                    "store_id": f"s_{rng.randrange(BUYERS):04d}",
                    "vendor_store_id": f"v_{rng.randrange(VENDORS):03d}",
                    "amount_cents": rng.randrange(100, 100_000),
                },
            }
        )
        if len(batch) == 1000:
            bodies.append(orjson.dumps(batch))
            batch = []
    if batch:
        bodies.append(orjson.dumps(batch))
    return bodies


def _kind(name: str, args: tuple[Any, ...]) -> str:
    """Which work a hooked call did: a rollup step (recompute: ``bounds``; delta: a part, an
    append or a merge, which also has ``bounds``; compaction, folding) or freshness."""
    if name in ("committed", "_fold"):
        return "rollups"
    after = next(a for a in args if isinstance(a, AfterInsert))
    delta = after.parts is not None or after.fold is not None
    return "rollups" if after.bounds is not None or delta else "freshness"


@contextmanager
def _timed(owner: Any, names: tuple[str, ...], spent: dict[str, float]) -> Iterator[None]:
    """Add the time spent in ``owner``'s methods ``names`` to ``spent``, by kind of work."""
    real = {n: getattr(owner, n) for n in names}

    def wrap(name: str, fn: Any) -> Any:
        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                spent[_kind(name, a)] += time.perf_counter() - t0

        return timed

    for n, fn in real.items():
        setattr(owner, n, wrap(n, fn))
    try:
        yield
    finally:
        for n, fn in real.items():
            setattr(owner, n, fn)


def _load(rt: Runtime, bodies: list[bytes]) -> dict[str, float]:
    spent = {"rollups": 0.0, "freshness": 0.0}
    if rt.warehouse.name == "clickhouse":
        hooks = [
            _timed(ch.ClickHouseWarehouse, ("_after_insert",), spent),
            _timed(compact.PartsKeeper, ("step", "committed"), spent),
        ]
    else:
        hooks = [_timed(duck.DuckDBWarehouse, ("_after_insert", "_fold"), spent)]
    with ExitStack() as stack:
        for h in hooks:
            stack.enter_context(h)
        t0 = time.perf_counter()
        for body in bodies:
            p = rt.collector.prepare(pack="marketplace", source="bench", dialect="native", raw=body)
            rt.collector.submit_sync(p)
        rt.loader.drain(timeout_s=3600)
        # The parts this run left are compacted (ClickHouse) or folded (DuckDB) here, on the
        # clock: the delta's deferred work is counted, not left for after the measurement.
        t1 = time.perf_counter()
        if isinstance(rt.warehouse, ch.ClickHouseWarehouse):
            rt.warehouse.compact_rollups()
            spent["rollups"] += time.perf_counter() - t1
        elif isinstance(rt.warehouse, duck.DuckDBWarehouse):
            rt.warehouse.fold_rollups()  # timed by the ``_fold`` hook
        total = time.perf_counter() - t0
    return {
        "after_insert_s": round(spent["rollups"] + spent["freshness"], 2),
        "rollups_s": round(spent["rollups"], 2),
        "freshness_s": round(spent["freshness"], 2),
        "collect_and_load_s": round(total, 2),
    }


def _snapshot(rt: Runtime) -> list[tuple[Any, ...]]:
    pack = rt.packs["marketplace"]
    out = []
    for name in pack.spec.rollups:
        rows = rt.warehouse.query(merged(pack, name, rt.warehouse.dialect)).to_pylist()
        for r in rows:
            vals = tuple(
                (tuple(sorted(v)) or None) if isinstance(v, list) else v for v in r.values()
            )
            out.append((name, *vals))
    return sorted(out, key=repr)


def _seed(data: Path, engine: str, base: int, end_us: int) -> float:
    """A warehouse in ``data`` holding ``base`` generated events and their rollups."""
    rt = Runtime(_settings(data, "recompute", engine))
    try:
        t0 = time.perf_counter()
        _generate(rt, base, end_us)
        pack = rt.packs["marketplace"]
        for name in pack.spec.rollups:  # as `gristmill rollups rebuild` does
            rebuild(rt.warehouse, pack, name)
        return round(time.perf_counter() - t0, 1)
    finally:
        rt.stop()


def _engine(engine: str, base: int, late: int, tmp: Path) -> dict[str, Any]:
    """DuckDB's folder is copied per mode; chdb's is not (its database folders are symlinks
    into its store), so each copy is generated again — the same rows: the generator is
    deterministic there."""
    out: dict[str, Any] = {"shapes": {}}
    seed = tmp / f"seed-{engine}"
    end_us = int(time.time() * 1_000_000) - 3_600_000_000
    out["fill_and_rebuild_s"] = _seed(seed, engine, base, end_us)
    now = time.time()
    for shape, spread in (("in_order_1h", 3600.0), ("late_3d", 3 * 86400.0)):
        bodies = _events(late, spread, now, shape)
        row: dict[str, Any] = {}
        snaps = []
        for mode in MODES:
            data = tmp / f"{engine}-{shape}-{mode}"
            if engine == "duckdb":
                shutil.copytree(seed, data)
            else:
                _seed(data, engine, base, end_us)
            rt = Runtime(_settings(data, mode, engine))
            try:
                row[mode] = _load(rt, bodies)
                snaps.append(_snapshot(rt))
            finally:
                rt.stop()
            shutil.rmtree(data)
        row["rollups_equal"] = snaps[0] == snaps[1]
        row["after_insert_speedup"] = round(
            row["recompute"]["after_insert_s"] / max(row["delta"]["after_insert_s"], 1e-9), 1
        )
        row["rollups_speedup"] = round(
            row["recompute"]["rollups_s"] / max(row["delta"]["rollups_s"], 1e-9), 1
        )
        out["shapes"][shape] = row
        print("rollups", engine, shape, row, flush=True)
    shutil.rmtree(seed)
    return out


def run(base: int, late: int, engines: tuple[str, ...] = ENGINES) -> dict[str, Any]:
    out: dict[str, Any] = {"base_events": base, "new_events": late, "engines": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for engine in engines:
            out["engines"][engine] = _engine(engine, base, late, Path(tmp))
    return out


def render(results: dict[str, Any]) -> str:
    r = results["rollups"]
    lines = [
        f"Run {results['when']} on {results['machine']['cores']} cores.",
        "",
        f"{r['base_events']:,} events already loaded (90 days), then {r['new_events']:,} new "
        "order events through the real collector and loader into a copy of that warehouse per "
        "mode. *Rollups*: time inside the loads' rollup steps (with delta: appending the "
        "batch's aggregates, folding them every 32 loads on DuckDB and compacting them every 64 "
        "on ClickHouse, and a last fold or compaction of what the run left); *+ freshness*: "
        "with the freshness step the same loads also run (the same work in both modes).",
        "",
        "| engine | new events | recompute: rollups / + freshness / collect+load | delta: "
        "rollups / + freshness / collect+load | rollups speedup | with freshness | "
        "rollups identical |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {"duckdb": "DuckDB", "clickhouse": "chdb"}
    for engine, e in r["engines"].items():
        for shape, row in e["shapes"].items():
            rc, dl = row["recompute"], row["delta"]
            lines.append(
                f"| {names.get(engine, engine)} | {shape.replace('_', ' ')} | "
                f"{rc['rollups_s']} s / {rc['after_insert_s']} s / {rc['collect_and_load_s']} s"
                f" | {dl['rollups_s']} s / {dl['after_insert_s']} s / {dl['collect_and_load_s']} s"
                f" | {row['rollups_speedup']}x | {row['after_insert_speedup']}x | "
                f"{'yes' if row['rollups_equal'] else 'NO'} |"
            )
    return "\n".join(lines)
