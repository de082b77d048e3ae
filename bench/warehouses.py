"""Issue 5 figures, per engine that runs here (DuckDB, PostgreSQL, ClickHouse in process via
chdb), all in one run:

* the loader's rows/s beside the engine's own raw bulk path for the same Arrow tables — DuckDB
  Arrow append, PostgreSQL binary COPY (pgpq), chdb INSERT … FORMAT ArrowStream — as a ratio.
  "loader" is ``Loader.drain``: read the log, decode frames, build Arrow, then the engine's
  ``commit_load`` (dedupe, insert, rollup and freshness refresh, ledger, offset); "commit" is
  ``commit_load`` alone on the same batches (the warehouse's share);
* the marketplace vendor view p50/p95 with the pack's rollup at ``n`` events generated inside
  each engine with SQL (in time order, 90 days, 40 vendors), after a full rollup rebuild.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import PACKS, checkpointed, collect, log_batches, pct, raw_duckdb_append
from gristmill.api.routers.views import answer_view
from gristmill.auth.permissions import Principal
from gristmill.config import ClickHouseSettings, DuckDBSettings, PostgresSettings, Settings
from gristmill.core.clock import to_datetime
from gristmill.demo.marketplace import DemoConfig, generate
from gristmill.metrics import planner
from gristmill.rollup.spec import full_rebuild
from gristmill.runtime import Runtime
from gristmill.warehouse.base import LoadBatch, TableRows

VENDORS = 40
BUYERS = 400
DAYS = 90
ADMIN_DSN = "host=127.0.0.1 dbname=postgres user=postgres"


@contextmanager
def _pg_database() -> Iterator[str]:
    import psycopg

    name = f"gm_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"host=127.0.0.1 dbname={name} user=postgres"
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def _runtime(engine: str, tmp: Path) -> Iterator[Runtime]:
    if engine == "postgres":
        with _pg_database() as dsn:
            rt = Runtime(
                Settings(data_dir=tmp, packs_dir=PACKS, warehouse=PostgresSettings(dsn=dsn))  # type: ignore[arg-type]
            )
            try:
                yield rt
            finally:
                rt.stop()
        return
    wh: Any = ClickHouseSettings() if engine == "clickhouse" else DuckDBSettings()
    rt = Runtime(Settings(data_dir=tmp, packs_dir=PACKS, warehouse=wh))
    try:
        yield rt
    finally:
        rt.stop()


# -- loader vs raw ----------------------------------------------------------------------------
def _fill_log(rt: Runtime, events: list[dict[str, Any]]) -> list[LoadBatch]:
    collect(rt, events)
    return log_batches(rt, "x", after=rt.loader.after)


def _raw_postgres(tables: list[TableRows]) -> float:
    import pgpq
    import psycopg

    from gristmill.warehouse.postgres.sql import stage_from_arrow

    with _pg_database() as dsn, psycopg.connect(dsn) as conn:
        made: set[str] = set()
        t0 = time.perf_counter()
        for tr in tables:
            arrow = tr.rows.drop_columns(["_dedupe_scope"])
            name = f"raw_{tr.table}"
            with conn.transaction(), conn.cursor() as cur:
                if name not in made:
                    # stage_from_arrow makes a TEMP table; a plain one is what a bulk load hits.
                    for s in stage_from_arrow(name, arrow.schema):
                        cur.execute(s.replace("CREATE TEMPORARY TABLE", "CREATE TABLE"))
                    made.add(name)
                enc = pgpq.ArrowToPostgresBinaryEncoder(arrow.schema)
                cols = ", ".join(f'"{c}"' for c in arrow.column_names)
                with cur.copy(f"COPY {name} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
                    copy.write(enc.write_header())
                    for rb in arrow.to_batches():
                        copy.write(enc.write_batch(rb))
                    copy.write(enc.finish())
        return time.perf_counter() - t0


def _raw_chdb(rt_tmp: Path, tables: list[TableRows]) -> float:
    """Into tables laid out as Gristmill's (same PARTITION BY and ORDER BY, in another
    database): on ClickHouse the layout, not the client, sets the cost of an insert (one
    part per partition a block touches)."""
    from gristmill.warehouse.clickhouse.connection import ChdbConnection
    from gristmill.warehouse.clickhouse.sql import pack_table, sql

    conn = ChdbConnection(rt_tmp / "raw-chdb")
    conn.command('CREATE DATABASE IF NOT EXISTS "raw"')
    made: set[str] = set()
    try:
        t0 = time.perf_counter()
        for tr in tables:
            arrow = tr.rows.drop_columns(["_dedupe_scope"])
            name = f'"raw"."{tr.table}"'
            if name not in made:
                create = sql(pack_table(tr.pack, tr.table))
                conn.command(create.replace(f'"{tr.pack.dataset}".', '"raw".', 1))
                made.add(name)
            conn.insert_arrow(name, arrow)
        return time.perf_counter() - t0
    finally:
        conn.close()


def loader_vs_raw(engine: str, events: int) -> dict[str, Any]:
    traffic = generate(DemoConfig(events=events, duplicate_rate=0, invalid_rate=0, seed=5))
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        with _runtime(engine, tmp / "g") as rt:
            batches = _fill_log(rt, traffic.events)
            t0 = time.perf_counter()
            rt.loader.drain(timeout_s=3600)
            checkpointed(rt)
            loader_s = time.perf_counter() - t0
        # commit_load alone, on a fresh warehouse, with the same batches (carrying the same
        # rollup/freshness steps the loader adds).
        with _runtime(engine, tmp / "c") as rt2:
            commit_s = 0.0
            for lb in batches:
                t0 = time.perf_counter()
                rt2.warehouse.commit_load(lb)
                commit_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            checkpointed(rt2)
            commit_s += time.perf_counter() - t0
        tables = [t for lb in batches for t in lb.tables]
        raw: Callable[[], float] = {
            "duckdb": lambda: raw_duckdb_append(
                tmp / "raw.duckdb",
                [(t.table, t.rows.drop_columns(["_dedupe_scope"])) for t in tables],
            ),
            "postgres": lambda: _raw_postgres(tables),
            "clickhouse": lambda: _raw_chdb(tmp, tables),
        }[engine]
        raw_s = raw()
    n = len(traffic.events)
    return {
        "events": n,
        "batches": len(batches),
        "loader_rows_per_s": round(n / loader_s),
        "commit_rows_per_s": round(n / commit_s),
        "raw_rows_per_s": round(n / raw_s),
        "ratio_loader_to_raw": round(raw_s / loader_s, 3),
        "ratio_commit_to_raw": round(raw_s / commit_s, 3),
    }


# -- vendor view at n events ------------------------------------------------------------------
DUCKDB_GEN = """
INSERT INTO marketplace.marketplace_events
  (event_id, event_type, schema_version, occurred_at, received_at, loaded_at, source,
   entity_type, entity_id, properties, order_id, store_id, vendor_store_id, amount_cents)
SELECT 'e' || i,
  CASE WHEN i % 10 < 5 THEN 'order_created' WHEN i % 10 < 9 THEN 'order_paid'
       ELSE 'cash_collected' END,
  1, ts, ts, now(), 'bench', 'order', 'o' || (i // 3), '{}', 'o' || (i // 3),
  's_' || lpad(CAST(CAST(floor(pow(random(), 1.6) * $buyers) AS INT) AS VARCHAR), 4, '0'),
  'v_' || lpad(CAST(CAST(floor(pow(random(), 1.8) * $vendors) AS INT) AS VARCHAR), 3, '0'),
  CAST(1000 + floor(random() * 120000) AS BIGINT)
FROM (SELECT i, $start + to_microseconds(CAST(i * $step AS BIGINT)) AS ts FROM range($lo, $hi) r(i))
"""

POSTGRES_GEN = """
INSERT INTO marketplace.marketplace_events
  (event_id, event_type, schema_version, occurred_at, received_at, loaded_at, source,
   entity_type, entity_id, properties, order_id, store_id, vendor_store_id, amount_cents)
SELECT 'e' || i,
  CASE WHEN i %% 10 < 5 THEN 'order_created' WHEN i %% 10 < 9 THEN 'order_paid'
       ELSE 'cash_collected' END,
  1, ts, ts, now(), 'bench', 'order', 'o' || (i / 3), '{}'::jsonb, 'o' || (i / 3),
  's_' || lpad(floor(power(random(), 1.6) * %(buyers)s)::int::text, 4, '0'),
  'v_' || lpad(floor(power(random(), 1.8) * %(vendors)s)::int::text, 3, '0'),
  (1000 + floor(random() * 120000))::bigint
FROM (SELECT i, %(start)s::timestamptz + make_interval(secs => i * %(step)s / 1e6) AS ts
      FROM generate_series(%(lo)s::bigint, %(hi)s::bigint - 1) i) g
"""

CLICKHOUSE_GEN = """
INSERT INTO marketplace.marketplace_events
  (event_id, event_type, schema_version, occurred_at, received_at, loaded_at, source,
   entity_type, entity_id, properties, order_id, store_id, vendor_store_id, amount_cents,
   _gm_batch_id)
SELECT concat('e', toString(number)),
  multiIf(number % 10 < 5, 'order_created', number % 10 < 9, 'order_paid', 'cash_collected'),
  1, ts, ts, now64(6), 'bench', 'order', concat('o', toString(intDiv(number, 3))), '{}',
  concat('o', toString(intDiv(number, 3))),
  concat('s_', leftPad(toString(toUInt32(floor(
         pow(sipHash64(number, 1) % 1000000 / 1e6, 1.6) * {buyers:UInt32}))), 4, '0')),
  concat('v_', leftPad(toString(toUInt32(floor(
         pow(sipHash64(number, 2) % 1000000 / 1e6, 1.8) * {vendors:UInt32}))), 3, '0')),
  toInt64(1000 + floor(sipHash64(number, 3) % 1000000 / 1e6 * 120000)), 'bench'
FROM (SELECT number, addMicroseconds({start:DateTime64(6, 'UTC')},
             toInt64(number * {step:Float64})) AS ts
      FROM numbers({lo:UInt64}, {count:UInt64}))
"""


def _generate(rt: Runtime, n: int, end_us: int) -> float:
    span = DAYS * 86400 * 1_000_000
    start = end_us - span
    step = span / n
    wh: Any = rt.warehouse
    t0 = time.perf_counter()
    chunk = 2_000_000
    if rt.warehouse.name == "postgres":
        from gristmill.warehouse.postgres.sql import partition, partition_start, sql

        pack = rt.packs["marketplace"]
        with wh._write_lock, wh._writer.transaction():
            for d in range(DAYS + 2):
                day = partition_start(to_datetime(start + d * 86_400_000_000), "day")
                wh._writer.execute(sql(partition(pack, "marketplace_events", day)))
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        if rt.warehouse.name == "duckdb":
            wh._cur().execute(
                DUCKDB_GEN,
                {
                    "buyers": BUYERS,
                    "vendors": VENDORS,
                    "lo": lo,
                    "hi": hi,
                    "step": step,
                    "start": to_datetime(start),
                },
            ).fetchall()
        elif rt.warehouse.name == "postgres":
            with wh._write_lock, wh._writer.transaction():
                wh._writer.execute(
                    POSTGRES_GEN,
                    {
                        "buyers": BUYERS,
                        "vendors": VENDORS,
                        "lo": lo,
                        "hi": hi,
                        "step": step,
                        "start": to_datetime(start),
                    },
                )
        else:
            wh._conn.command(
                CLICKHOUSE_GEN,
                {
                    "buyers": BUYERS,
                    "vendors": VENDORS,
                    "lo": lo,
                    "count": hi - lo,
                    "step": step,
                    "start": to_datetime(start),
                },
            )
    return time.perf_counter() - t0


def vendor_view(engine: str, n: int, iterations: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp_s, _runtime(engine, Path(tmp_s) / "v") as rt:
        gen_s = _generate(rt, n, int(time.time() * 1_000_000))
        pack = rt.packs["marketplace"]
        t0 = time.perf_counter()
        for stmt in full_rebuild(
            pack,
            "marketplace_hourly",
            pack.spec.rollups["marketplace_hourly"],
            rt.warehouse.dialect,
        ):
            rt.warehouse.execute(stmt)
        rebuild_s = time.perf_counter() - t0
        spec = pack.spec.views["vendor_analytics"]
        rng = random.Random(1)
        times: list[float] = []
        used: list[bool] = []
        real = planner.choose_rollup

        def spy(*a: Any) -> Any:
            chosen = real(*a)
            used.append(chosen is not None)
            return chosen

        planner.choose_rollup = spy  # type: ignore[assignment]
        for i in range(iterations + 5):
            who = Principal(
                kind="secret",
                role="vendor",
                pack="marketplace",
                claims={"store_id": f"v_{rng.randrange(VENDORS):03d}"},
            )
            t1 = time.perf_counter()
            answer_view(
                rt,
                who,
                pack,
                "vendor_analytics",
                spec,
                preset=rng.choice(spec.presets),
                tz="UTC",
                start=None,
                end=None,
                debug=False,
            )
            if i >= 5:  # the first few warm caches and compile query shapes
                times.append(time.perf_counter() - t1)
        planner.choose_rollup = real  # type: ignore[assignment]
    return {
        "events": n,
        "generate_s": round(gen_s, 1),
        "rollup_full_rebuild_s": round(rebuild_s, 1),
        "p50_ms": round(pct(times, 50) * 1000, 1),
        "p95_ms": round(pct(times, 95) * 1000, 1),
        "iterations": iterations,
        "rollup_share": round(sum(used) / max(1, len(used)), 2),
    }


def run(engines: list[str], events: int, view_events: int, iterations: int) -> dict[str, Any]:
    out: dict[str, Any] = {"_load_average": list(os.getloadavg())}
    for engine in engines:
        try:
            r = {"loader": loader_vs_raw(engine, events)}
            print(engine, "loader", r["loader"], flush=True)
            r["view"] = vendor_view(engine, view_events, iterations)
            print(engine, "view", r["view"], flush=True)
        except Exception as exc:  # an engine that cannot run here is reported, not fatal
            r = {"skipped": f"{type(exc).__name__}: {exc}"[:300]}
            print(engine, "skipped", r, flush=True)
        out[engine] = r
    return out


def render(results: dict[str, Any]) -> str:
    lines = [
        f"Run {results['when']} on {results['machine']['cores']} cores "
        f"({results['machine']['cpu']}), shared with other work.",
        "",
        "| engine | loader rows/s | commit_load alone | engine's raw bulk path (same Arrow "
        "tables) | loader / raw | commit / raw | vendor view p50 / p95 | at events | "
        "generate + rollup rebuild |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    raw_name = {
        "duckdb": "Arrow append",
        "postgres": "binary COPY (pgpq)",
        "clickhouse": "chdb INSERT ArrowStream",
    }
    for engine, r in results["warehouses"].items():
        if engine.startswith("_"):
            continue
        if "skipped" in r:
            lines.append(f"| {engine} | skipped: {r['skipped']} | | | | | | | |")
            continue
        ld, v = r["loader"], r["view"]
        lines.append(
            f"| {engine} | {ld['loader_rows_per_s']:,} | {ld['commit_rows_per_s']:,} | "
            f"{ld['raw_rows_per_s']:,} ({raw_name[engine]}) | {ld['ratio_loader_to_raw']:.0%} | "
            f"{ld['ratio_commit_to_raw']:.0%} | {v['p50_ms']} / {v['p95_ms']} ms "
            f"(rollup in {v['rollup_share']:.0%} of table plans) | {v['events']:,} | "
            f"{v['generate_s']} s + "
            f"{v['rollup_full_rebuild_s']} s |"
        )
    first = next(
        (r for r in results["warehouses"].values() if isinstance(r, dict) and "loader" in r),
        None,
    )
    if first:
        lines.append("")
        lines.append(
            f"Loader figures over {first['loader']['events']:,} demo events in "
            f"{first['loader']['batches']} log batches; the view is answered in process "
            "(planner + warehouse), rollup path, random vendor and preset per call."
        )
    load = results["warehouses"].get("_load_average")
    if load:
        lines.append(f"Load average when the run started: {load[0]:.1f} on 2 cores.")
    return "\n".join(lines)
