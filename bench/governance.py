"""Governance at scale: erasure of one subject and a retention run, beside the naive SQL.

1. **Erasure** in a DuckDB warehouse of N platform events (100k users, 8 years, the subject's
   email in some properties): Gristmill's whole job (suppress, drain, find by id *and* by
   subject property, delete, recompute the subject's rollup buckets, quarantine scan, log
   scrub) beside a plain ``DELETE … WHERE user_id = ?`` of another user of the same size,
   which leaves the rollups, the quarantine and the email matches behind.
2. **Retention** over the same rows: the per-category run on DuckDB (deletes only), and on
   chdb (ClickHouse in process) with M rows on one day a month — partitions dropped where
   every row is expired,
   beside a plain ``DELETE … WHERE occurred_at < cutoff`` over a copy of the table.

Rows are written with SQL (``range()``, ``numbers()``), not through the collector: this
measures governance, not ingest. Run alone: ``python -m bench --only governance``.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import PACKS
from gristmill.config import ClickHouseSettings, Settings
from gristmill.core.subjects import Mode
from gristmill.governance.erasure import Subject
from gristmill.rollup.spec import full_rebuild
from gristmill.runtime import Runtime

NOW = datetime(2026, 12, 1, tzinfo=UTC)
EIGHT_YEARS_S = 8 * 365 * 86400
USERS = 100_000
TYPES = ("payment.completed", "search.performed", "user.login", "review.posted")
CATS = ("transaction", "interaction", "user_activity", "content")


def _settings(data: Path, **kw: Any) -> Settings:
    return Settings(data_dir=data, packs_dir=PACKS, packs=["platform"], **kw)


def _fill_duckdb(rt: Runtime, n: int) -> None:
    """n events: user i % USERS, type i % 4, times spread evenly over 8 years."""
    start = int(NOW.timestamp()) - EIGHT_YEARS_S
    sql = f"""
        INSERT INTO platform.platform_events
            (event_id, event_type, schema_version, occurred_at, received_at, loaded_at, source,
             user_id, properties, event_category)
        SELECT 'e' || i::VARCHAR,
               ['{TYPES[0]}', '{TYPES[1]}', '{TYPES[2]}', '{TYPES[3]}'][i % 4 + 1],
               1,
               to_timestamp({start} + (i * {EIGHT_YEARS_S} // {n})),
               now(), now(), 'bench',
               'u' || (i % {USERS})::VARCHAR,
               CASE WHEN i % 99991 = 0 THEN '{{"email":"erase.me@example.org"}}'
                    ELSE '{{"query":"q"}}' END::JSON,
               ['{CATS[0]}', '{CATS[1]}', '{CATS[2]}', '{CATS[3]}'][i % 4 + 1]
        FROM range({n}) t(i)
    """
    rt.warehouse.query_sql(sql)
    pack = rt.packs["platform"]
    for name, r in pack.spec.rollups.items():
        for stmt in full_rebuild(pack, name, r, rt.warehouse.dialect):
            rt.warehouse.execute(stmt)


def erasure(n: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(_settings(Path(tmp) / "d"))
        try:
            t0 = time.perf_counter()
            _fill_duckdb(rt, n)
            fill_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            rid = rt.governance.request_erasure(
                Subject(("u42",), (), ("erase.me@example.org",)), Mode.DELETE, "bench"
            )
            rt.governance.run_pending()
            took = time.perf_counter() - t0
            record = rt.governance.status(rid)
            assert record is not None
            assert record.status == "completed", record
            t0 = time.perf_counter()
            plain = rt.warehouse.query_sql(
                "DELETE FROM platform.platform_events WHERE user_id = $u", {"u": "u43"}
            )
            plain_s = time.perf_counter() - t0
            plain_rows = int(plain.column(0)[0].as_py()) if plain.num_rows else 0
            verify = _verify(rt)
            t0 = time.perf_counter()
            report = rt.governance.run_retention(now=NOW)
            retention_s = time.perf_counter() - t0
        finally:
            rt.stop()
    rep = record.report
    return {
        "events": n,
        "fill_s": round(fill_s, 2),
        "erasure_s": round(took, 3),
        "erasure_rows": rep["rows_total"],
        "erasure_steps_s": rep["steps_s"],
        "buckets_recomputed": sum(r["buckets_recomputed"] for r in rep["rollups"]),
        "rows_scanned": n,
        "plain_delete_s": round(plain_s, 3),
        "plain_delete_rows": plain_rows,
        "retention_duckdb_s": round(retention_s, 2),
        "retention_duckdb_rows": report.rows,
        **verify,
    }


RESTORED = 100


def _verify(rt: Runtime) -> dict[str, Any]:
    """``erasure verify`` after the erasure (clean), beside the bare scan it cannot do
    without (the distinct user ids); then a restore of the erased subject's rows, as a backup
    taken before would bring them back, and ``--repair``."""
    t0 = time.perf_counter()
    clean = rt.governance.verify_erasures().as_dict()
    verify_s = time.perf_counter() - t0
    assert clean["clean"], clean
    t0 = time.perf_counter()
    rt.warehouse.query_sql("SELECT count(DISTINCT user_id) FROM platform.platform_events")
    distinct_s = time.perf_counter() - t0
    rt.warehouse.query_sql(
        f"""INSERT INTO platform.platform_events
              (event_id, event_type, schema_version, occurred_at, received_at, loaded_at,
               source, user_id, properties, event_category)
            SELECT 'restored' || i::VARCHAR, '{TYPES[0]}', 1,
                   to_timestamp({int(NOW.timestamp())} - i * 86400), now(), now(), 'bench',
                   'u42', '{{"query":"q"}}'::JSON, '{CATS[0]}'
            FROM range({RESTORED}) t(i)"""
    )
    t0 = time.perf_counter()
    fixed = rt.governance.verify_erasures(repair=True).as_dict()
    repair_s = time.perf_counter() - t0
    assert fixed["rows_found"] == RESTORED, fixed
    return {
        "verify_s": round(verify_s, 3),
        "verify_identities": clean["identities_checked"],
        "distinct_s": round(distinct_s, 3),
        "repair_s": round(repair_s, 3),
        "repair_rows": fixed["rows_found"],
        "repair_buckets": sum(r["buckets_recomputed"] for r in fixed["rollups"]),
    }


def retention_chdb(m: int) -> dict[str, Any]:
    """Partition drops + per-category deletes (Gristmill) vs one plain DELETE, on chdb."""
    try:
        import chdb  # noqa: F401
    except ImportError:
        return {"skipped": "chdb is not installed"}
    start = int(NOW.timestamp()) - EIGHT_YEARS_S
    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(_settings(Path(tmp) / "d", warehouse=ClickHouseSettings()))
        try:
            wh: Any = rt.warehouse
            cols = (
                "event_id, event_type, schema_version, occurred_at, received_at, loaded_at, "
                "source, user_id, properties, event_category, _gm_batch_id"
            )
            select = (
                f"SELECT concat('e', toString(number)), "
                f"['{TYPES[0]}','{TYPES[1]}','{TYPES[2]}','{TYPES[3]}'][number % 4 + 1], 1, "
                # One day a month over 8 years: 96 daily partitions (thousands of tiny
                # parts would measure chdb's file creation, not retention).
                f"toDateTime64({start} + (number % 96) * {EIGHT_YEARS_S // 96} "
                "+ (number % 86400), 6, 'UTC'), "
                "now64(6), now64(6), 'bench', concat('u', toString(number % 100000)), "
                "'{}', "
                f"['{CATS[0]}','{CATS[1]}','{CATS[2]}','{CATS[3]}'][number % 4 + 1], 'bench' "
                f"FROM numbers({m})"
            )
            settings = " SETTINGS max_partitions_per_insert_block = 0"
            wh._conn.command(f"INSERT INTO platform.platform_events ({cols}) {select}{settings}")
            wh._conn.command("CREATE TABLE platform.bench_copy AS platform.platform_events")
            wh._conn.command(f"INSERT INTO platform.bench_copy ({cols}) {select}{settings}")
            t0 = time.perf_counter()
            report = rt.governance.run_retention(now=NOW)
            ours = time.perf_counter() - t0
            cutoff = int(NOW.timestamp()) - 7 * 365 * 86400
            t0 = time.perf_counter()
            wh._conn.command(
                "DELETE FROM platform.bench_copy WHERE occurred_at < "
                f"toDateTime64({cutoff}, 6, 'UTC')"
            )
            plain = time.perf_counter() - t0
        finally:
            rt.stop()
    return {
        "rows": m,
        "retention_s": round(ours, 2),
        "rows_removed": report.rows,
        "partitions_dropped": len(report.partitions_dropped),
        "plain_delete_oldest_s": round(plain, 2),
    }


def run(n: int = 10_000_000, m: int = 200_000) -> dict[str, Any]:
    return {"erasure": erasure(n), "chdb": retention_chdb(m)}


def render(results: dict[str, Any]) -> str:
    g = results["governance"]
    e, c = g["erasure"], g["chdb"]
    lines = [
        f"Run {results['when']} on {results['machine']['cores']} cores.",
        "",
        "| measure | Gristmill | naive SQL (same run) |",
        "|---|---|---|",
        f"| erase one subject in {e['events']:,} events (DuckDB; {e['rows_scanned']:,} rows "
        f"scanned) | {e['erasure_s']} s: {e['erasure_rows']} rows by id and email, "
        f"{e['buckets_recomputed']} rollup buckets recomputed, quarantine and log scrubbed | "
        f"`DELETE … WHERE user_id = ?`: {e['plain_delete_s']} s, {e['plain_delete_rows']} rows, "
        "rollups and email matches left behind |",
        f"| `erasure verify` over {e['events']:,} events after it (DuckDB; "
        f"{e['verify_identities']:,} identities hashed) | {e['verify_s']} s, clean | "
        f"`SELECT count(DISTINCT user_id)`: {e['distinct_s']} s |",
        f"| `erasure verify --repair` after a restore brought back {e['repair_rows']} of the "
        f"subject's rows | {e['repair_s']} s: {e['repair_rows']} rows found and deleted, "
        f"{e['repair_buckets']} rollup buckets recomputed | — |",
        f"| retention run over {e['events']:,} events (DuckDB, deletes by category) | "
        f"{e['retention_duckdb_s']} s, {e['retention_duckdb_rows']:,} rows removed | — |",
    ]
    if "skipped" in c:
        lines.append(f"| retention on chdb | skipped: {c['skipped']} | |")
    else:
        lines.append(
            f"| retention over {c['rows']:,} events on chdb | {c['retention_s']} s: "
            f"{c['partitions_dropped']:,} partitions dropped, {c['rows_removed']:,} rows "
            f"removed in all | one `DELETE … WHERE occurred_at < cutoff` (the oldest "
            f"category's rows only): {c['plain_delete_oldest_s']} s |"
        )
    steps = ", ".join(f"{k} {v} s" for k, v in e["erasure_steps_s"].items())
    lines += ["", f"Erasure steps: {steps}."]
    return "\n".join(lines)
