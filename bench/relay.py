"""Outbox relay vs a naive ``WHERE id > last`` poller, in the same run, on PostgreSQL.

1. **Under concurrency**: 50 writers commit transactions of 1-10 rows after random pauses
   while both readers poll the same outbox. Counts the rows each one never saw.
2. **On a backlog**: each reader, as a fresh consumer, sends the whole table through the
   collector pipeline into its own SQLite log; rows/s. The relay also checks and writes a
   processed marker per row and its horizon per batch; the naive poller does neither.

Run alone: ``python -m bench --only relay``.
"""

from __future__ import annotations

import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from bench.common import PACKS
from gristmill.collect.service import Parser
from gristmill.config import OutboxSettings, RelaySettings, Settings
from gristmill.log.registry import open_log
from gristmill.outbox import ddl
from gristmill.pack.loader import load_packs
from gristmill.relay import open_relay
from gristmill.relay.feed import Feed
from gristmill.relay.outbox import PostgresOutbox


class NaivePoller:
    """What many outbox relays do: remember the largest id seen, ask for larger ones."""

    def __init__(self, dsn: str, feed: Feed, batch: int) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn, autocommit=True)
        self.feed = feed
        self.batch = batch
        self.last = 0
        self.seen: set[str] = set()

    def step(self) -> int:
        rows = self.conn.execute(
            "SELECT id, event_id, payload::text FROM gristmill_outbox WHERE id > %s"
            " ORDER BY id LIMIT %s",
            (self.last, self.batch),
        ).fetchall()
        if rows:
            self.feed.append([self.feed.rows([r[2].encode() for r in rows])])
            self.seen.update(r[1] for r in rows)
            self.last = rows[-1][0]
        return len(rows)

    def close(self) -> None:
        self.conn.close()


def _settings(tmp: Path, dsn: str, consumer: str) -> Settings:
    return Settings(
        data_dir=tmp / consumer,
        packs_dir=PACKS,
        packs=["marketplace"],
        relay=RelaySettings(
            outbox=OutboxSettings(url=SecretStr(dsn)),
            consumer=consumer,
            batch_size=2000,
            poll_interval_s=0.02,
        ),
    )


def _naive_feed(settings: Settings, stack: ExitStack) -> Feed:
    log = open_log(settings)
    stack.callback(log.close)
    packs = load_packs(settings.resolved_packs_dir, settings.packs)
    return Feed(Parser(packs, settings.limits), log, pack=None, source="outbox", dialect="native")


def run(rows: int = 50_000) -> dict[str, Any]:
    try:
        import psycopg
        from tests.integration.test_relay import write_concurrently
        from tests.pg import scratch_database

        psycopg.connect("host=127.0.0.1 dbname=postgres user=postgres").close()
    except Exception as exc:
        return {"skipped": f"PostgreSQL not reachable: {exc}"}
    with scratch_database() as dsn, tempfile.TemporaryDirectory() as d, ExitStack() as stack:
        tmp = Path(d)
        with psycopg.connect(dsn, autocommit=True) as c:
            c.execute(ddl("postgres"))
        # 1. both readers poll while 50 writers commit
        stop = threading.Event()
        relay = open_relay(_settings(tmp, dsn, "live"), stack, stop=stop)
        naive = NaivePoller(dsn, _naive_feed(_settings(tmp, dsn, "naive-live"), stack), 2000)
        stack.callback(naive.close)
        t_relay = threading.Thread(target=relay.run)
        t_relay.start()

        def poll() -> None:
            while not stop.is_set():
                if naive.step() == 0:
                    stop.wait(0.02)

        t_naive = threading.Thread(target=poll)
        t_naive.start()
        committed = write_concurrently(dsn, 50, rows // 50, 0.03, seed=9)
        time.sleep(1.0)
        stop.set()
        t_relay.join()
        t_naive.join()
        while naive.step():  # catch up after the writers: the skipped rows stay skipped
            pass
        tail = open_relay(_settings(tmp, dsn, "live"), stack).run(until_idle=True)
        relay_sent = relay.stats.sent + tail.sent
        # 2. a fresh consumer of each kind on the full backlog. First wait until the horizon
        # passed every row (other transactions on a shared server hold it back): this part
        # measures throughput, not that wait.
        probe = PostgresOutbox(dsn, OutboxSettings())
        target = probe.frontier() or 0
        while (probe.horizon() or 0) < target:
            time.sleep(0.05)
        probe.close()
        backlog = open_relay(_settings(tmp, dsn, "backlog"), stack)
        t0 = time.perf_counter()
        st = backlog.run(until_idle=True)
        relay_s = time.perf_counter() - t0
        naive2 = NaivePoller(dsn, _naive_feed(_settings(tmp, dsn, "naive-backlog"), stack), 2000)
        stack.callback(naive2.close)
        t0 = time.perf_counter()
        while naive2.step():
            pass
        naive_s = time.perf_counter() - t0
        return {
            "rows": len(committed),
            "writers": 50,
            "relay_missed": len(committed) - relay_sent,
            "naive_missed": len(committed - naive.seen),
            "relay_backlog_rows_per_s": round(st.sent / relay_s),
            "naive_backlog_rows_per_s": round(len(naive2.seen) / naive_s),
        }


def render(results: dict[str, Any]) -> str:
    r = results["relay"]
    head = [f"Run {results['when']} on {results['machine']['cores']} cores.", ""]
    if "skipped" in r:
        return "\n".join([*head, f"Skipped: {r['skipped']}"])
    return "\n".join(
        [
            *head,
            "| measure | gristmill relay | naive `id > last` poller (same run) |",
            "|---|---|---|",
            f"| rows never delivered, {r['writers']} concurrent writers, {r['rows']:,} rows "
            f"| {r['relay_missed']} | {r['naive_missed']} |",
            f"| backlog through the collector into a SQLite log | "
            f"{r['relay_backlog_rows_per_s']:,} rows/s | "
            f"{r['naive_backlog_rows_per_s']:,} rows/s |",
        ]
    )
