"""The embedded log: one SQLite file in WAL mode, appended with group commit.

Concurrent requests put their frames on a queue; one writer thread takes everything queued,
inserts it in one transaction and commits with one fsync (``synchronous=FULL``), then wakes
every waiter (``log.group_commit``). Under load, dozens of requests share an fsync; idle, a
request pays one. The collector hands its frames over unencoded (:meth:`append_frame_async`):
the writer merges consecutive requests of one source into one record (``log.frames``).

Offsets come from an ``AUTOINCREMENT`` key so they never repeat after the consumed prefix is
deleted: the warehouse stores the last offset it loaded, and reuse would make it skip data.

The cap counts bytes not yet loaded **in the file**, whoever appended or loaded them: a
``gristmill consume`` or ``relay`` process appends to the file a ``gristmill serve`` loads.
Each append and each commit moves a running total kept in the file (``log_bytes``) in its own
transaction; a process keeps a copy in memory for the hot path and re-reads the total (one
row) before refusing an append and at least every ``sync_interval_s``. A copy that only ever
counted its own appends would stay "full" forever in a process that never loads.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from gristmill.core.envelope import Frame, Layout
from gristmill.log import frames
from gristmill.log.base import LogBatch, LogEntry, LogFull, LogRecord, LogSnapshot
from gristmill.log.group_commit import GroupCommit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    "offset" INTEGER PRIMARY KEY AUTOINCREMENT,
    pack TEXT NOT NULL,
    source TEXT NOT NULL,
    n INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    pack TEXT NOT NULL,
    source TEXT NOT NULL,
    received INTEGER NOT NULL,
    PRIMARY KEY (pack, source)
);
CREATE TABLE IF NOT EXISTS suppressed (
    pack TEXT NOT NULL,
    source TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (pack, source)
);
CREATE TABLE IF NOT EXISTS log_info (
    log_id TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS offsets (
    grp TEXT PRIMARY KEY,
    "offset" INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS log_bytes (
    appended INTEGER NOT NULL,
    freed INTEGER NOT NULL
);
"""


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA busy_timeout=30000")
    return conn


class SQLiteLog:
    name = "sqlite"
    background_commit = True
    idle_when_empty = True

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        retry_after_s: int = 5,
        group_commit_max: int = 512,
        sync_interval_s: float = 0.25,
        elsewhere: Callable[[], int] | None = None,
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.retry_after_s = retry_after_s
        self.group_commit_max = group_commit_max
        self.sync_interval_s = sync_interval_s
        """How stale the in-memory byte count may get (other processes append and load)."""
        self.elsewhere = elsewhere
        """Unloaded bytes of the sibling files of a partitioned log: the cap is on the sum."""
        self._w = connect(path)
        self._w.executescript(_SCHEMA)
        self.log_id = self._identity()
        self._init_byte_total()
        self._r = connect(path)
        self._r_lock = threading.Lock()
        self._c = connect(path)
        self._c_lock = threading.Lock()
        self._new_data = threading.Condition()
        self._bytes_lock = threading.Lock()
        self._b = connect(path)
        """Reads the byte total under ``_bytes_lock``: never behind a long snapshot."""
        self._inflight = 0
        """Bytes this process reserved that the writer has not settled yet (not in the file)."""
        self._pending_bytes = self._stored_pending()
        self._synced_at = time.monotonic()
        self.fsyncs = 0
        self._closed = False
        self._writer = GroupCommit(
            self._write, self._settled, self._corrected, self._notify, max_items=group_commit_max
        )

    def _identity(self) -> str:
        """A random id made when the file is created; the warehouse keys its offset by it, so
        a replaced log file starts from offset 0 instead of being skipped."""
        row = self._w.execute("SELECT log_id FROM log_info").fetchone()
        if row:
            return str(row[0])
        log_id = f"sqlite-{uuid.uuid4().hex[:16]}"
        self._w.execute("INSERT INTO log_info (log_id) VALUES (?)", (log_id,))
        return log_id

    # -- append -------------------------------------------------------------------------
    def _init_byte_total(self) -> None:
        """A file made before ``log_bytes`` existed starts its total from what it holds."""
        c = self._w
        c.execute("BEGIN IMMEDIATE")
        try:
            if c.execute("SELECT 1 FROM log_bytes").fetchone() is None:
                c.execute(
                    "INSERT INTO log_bytes (appended, freed) VALUES (?, 0)",
                    (self._count_pending_bytes(c),),
                )
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def _stored_pending(self) -> int:
        """Unloaded bytes in the file, every process's appends and commits included (called
        under ``_bytes_lock``, or before other threads exist)."""
        row = self._b.execute("SELECT appended - freed FROM log_bytes").fetchone()
        own = int(row[0]) if row else 0
        return own + (self.elsewhere() if self.elsewhere is not None else 0)

    def _reserve(self, records: Sequence[LogRecord]) -> int:
        return self._reserve_bytes(sum(len(r.body) for r in records if r.count))  # 0: not kept

    def _reserve_bytes(self, size: int) -> int:
        with self._bytes_lock:
            now = time.monotonic()
            full = self._pending_bytes + size > self.max_bytes and self._pending_bytes > 0
            if full or now - self._synced_at >= self.sync_interval_s:
                # Reserved bytes still on their way to the file count too; a write that
                # commits between the two reads is counted twice until the next sync (an
                # early "full" that the re-read before refusing corrects, never a late one).
                self._pending_bytes = self._stored_pending() + self._inflight
                self._synced_at = now
                full = self._pending_bytes + size > self.max_bytes and self._pending_bytes > 0
            if full:
                raise LogFull(self._pending_bytes, self.max_bytes, self.retry_after_s, size)
            self._pending_bytes += size
            self._inflight += size
        return size

    def _settled(self, size: int, *, written: bool) -> None:
        with self._bytes_lock:
            self._inflight -= size
            if not written:
                self._pending_bytes -= size

    def _corrected(self, delta: int) -> None:
        """A commit stored ``delta`` bytes more than its appends reserved (frames reserve an
        estimate of their encoded size)."""
        with self._bytes_lock:
            self._pending_bytes += delta

    def _release(self, size: int) -> None:
        with self._bytes_lock:
            # Another process may have appended what this one loaded: never below nothing.
            self._pending_bytes = max(0, self._pending_bytes - size)

    def append(self, records: Sequence[LogRecord]) -> None:
        if records:
            self._writer.append(self._reserve(records), records)

    async def append_async(self, records: Sequence[LogRecord]) -> None:
        if records:
            await self._writer.append_async(self._reserve(records), records)

    async def append_frame_async(self, frame: Frame, layout: Layout) -> None:
        """Append one frame, encoded by the writer thread together with the frames of the
        same source queued beside it (``log.frames``): one record for a burst of
        single-event requests instead of one each."""
        size = self._reserve_bytes(frames.estimate(frame) if frame.count else 0)
        await self._writer.append_async(size, (), (frame, layout))

    def _notify(self) -> None:
        with self._new_data:
            self._new_data.notify_all()

    def _write(self, records: list[LogRecord]) -> int:
        """Append ``records`` in one transaction; returns the bytes stored."""
        rows = []
        size = 0
        counts: dict[tuple[str, str], int] = defaultdict(int)
        suppressed: dict[tuple[str, str], int] = defaultdict(int)
        for r in records:
            if r.suppressed:
                suppressed[(r.pack, r.source)] += r.suppressed
            if r.count == 0:
                continue  # every item suppressed: nothing to load, only counted
            rows.append((r.pack, r.source, r.count, r.received_at, r.body))
            size += len(r.body)
            counts[(r.pack, r.source)] += r.count
        c = self._w
        c.execute("BEGIN IMMEDIATE")
        try:
            c.executemany(
                "INSERT INTO records (pack, source, n, received_at, body) VALUES (?,?,?,?,?)",
                rows,
            )
            c.executemany(
                "INSERT INTO counters (pack, source, received) VALUES (?,?,?) "
                "ON CONFLICT (pack, source) DO UPDATE SET received = received + excluded.received",
                [(p, s, n) for (p, s), n in counts.items()],
            )
            c.execute("UPDATE log_bytes SET appended = appended + ?", (size,))
            if suppressed:
                c.executemany(
                    "INSERT INTO suppressed (pack, source, n) VALUES (?,?,?) "
                    "ON CONFLICT (pack, source) DO UPDATE SET n = n + excluded.n",
                    [(p, s, n) for (p, s), n in suppressed.items()],
                )
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise
        self.fsyncs += 1
        return size

    # -- consume ------------------------------------------------------------------------
    def committed(self, group: str) -> int:
        with self._r_lock:
            row = self._r.execute('SELECT "offset" FROM offsets WHERE grp = ?', (group,)).fetchone()
        return int(row[0]) if row else 0

    def read(
        self, group: str, max_events: int, timeout_s: float, after: int | None = None
    ) -> LogBatch:
        """Next records after the group's committed offset (or ``after``), up to ``max_events``.

        Always returns at least one record when any is there, even if it alone is larger.
        """
        start = self.committed(group) if after is None else after
        deadline = time.monotonic() + timeout_s
        batch = LogBatch(group)
        while True:
            with self._r_lock:
                cur = self._r.execute(
                    'SELECT "offset", pack, source, n, received_at, body FROM records '
                    'WHERE "offset" > ? ORDER BY "offset" LIMIT 2000',
                    (start,),
                )
                events = 0
                for off, pack, source, n, rec_at, body in cur:
                    if batch.entries and events + n > max_events:
                        break
                    batch.entries.append(LogEntry(off, LogRecord(pack, source, n, rec_at, body)))
                    events += n
                cur.close()
            if batch.entries:
                return batch
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return batch
            with self._new_data:
                self._new_data.wait(min(remaining, 0.05))

    def commit(self, group: str, offset: int) -> None:
        """Record the group's offset and delete what every group has consumed.

        Runs on its own connection so a commit never waits behind the writer's queue; SQLite's
        write lock orders it against appends.
        """
        with self._c_lock:
            c = self._c
            c.execute("BEGIN IMMEDIATE")
            try:
                c.execute(
                    'INSERT INTO offsets (grp, "offset") VALUES (?, ?) ON CONFLICT (grp) '
                    'DO UPDATE SET "offset" = max("offset", excluded."offset")',
                    (group, offset),
                )
                low = c.execute('SELECT min("offset") FROM offsets').fetchone()[0]
                freed = c.execute(
                    'SELECT coalesce(sum(length(body)), 0) FROM records WHERE "offset" <= ?',
                    (low,),
                ).fetchone()[0]
                c.execute('DELETE FROM records WHERE "offset" <= ?', (low,))
                c.execute("UPDATE log_bytes SET freed = freed + ?", (freed,))
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        self._release(int(freed))

    @staticmethod
    def _count_pending_bytes(c: sqlite3.Connection) -> int:
        row = c.execute(
            'SELECT coalesce(sum(length(body)), 0) FROM records WHERE "offset" > '
            '(SELECT coalesce(min("offset"), 0) FROM offsets)'
        ).fetchone()
        return int(row[0])

    # -- erasure ------------------------------------------------------------------------
    def head(self) -> int:
        """The offset of the newest record ever appended (0 for an empty log): an erasure
        waits until the warehouse has loaded up to here."""
        with self._r_lock:
            row = self._r.execute(
                "SELECT seq FROM sqlite_sequence WHERE name = 'records'"
            ).fetchone()
        return int(row[0]) if row else 0

    def scrub(self) -> dict[str, int]:
        """Make consumed records unrecoverable from the files: SQLite leaves deleted rows in
        free pages and in the WAL until they are reused. ``VACUUM`` rewrites the database
        without free pages and a ``TRUNCATE`` checkpoint empties the WAL. Appends wait behind
        it for as long as the log holds unloaded data to copy (an erasure drains it first)."""
        with self._c_lock:
            self._c.execute("VACUUM")
            busy, _, _ = self._c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        wal = self.path.with_name(self.path.name + "-wal")
        return {
            "log_bytes": self.path.stat().st_size,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0,
            "checkpoint_busy": int(busy),
        }

    # -- observe ------------------------------------------------------------------------
    def snapshot(self, group: str, after_offset: int | None = None) -> LogSnapshot:
        with self._r_lock:
            c = self._r
            c.execute("BEGIN")
            try:
                committed = c.execute(
                    'SELECT "offset" FROM offsets WHERE grp = ?', (group,)
                ).fetchone()
                committed_offset = int(committed[0]) if committed else 0
                after = committed_offset if after_offset is None else after_offset
                received = {
                    (p, s): int(n)
                    for p, s, n in c.execute("SELECT pack, source, received FROM counters")
                }
                pending = {
                    (p, s): int(n)
                    for p, s, n in c.execute(
                        'SELECT pack, source, sum(n) FROM records WHERE "offset" > ? '
                        "GROUP BY pack, source",
                        (after,),
                    )
                }
                oldest = {
                    str(p): int(t)
                    for p, t in c.execute(
                        'SELECT pack, min(received_at) FROM records WHERE "offset" > ? '
                        "GROUP BY pack",
                        (after,),
                    )
                }
                suppressed = {
                    (p, s): int(n)
                    for p, s, n in c.execute("SELECT pack, source, n FROM suppressed")
                }
                depth = c.execute(
                    "SELECT count(*), coalesce(sum(n), 0), coalesce(sum(length(body)), 0), "
                    'min(received_at) FROM records WHERE "offset" > ?',
                    (after,),
                ).fetchone()
            finally:
                c.execute("COMMIT")
        return LogSnapshot(
            received=received,
            pending=pending,
            committed_offset=committed_offset,
            depth_records=int(depth[0]),
            depth_events=int(depth[1]),
            depth_bytes=int(depth[2]),
            oldest_pending_received_at=None if depth[3] is None else int(depth[3]),
            oldest_pending=oldest,
            suppressed=suppressed,
        )

    @property
    def pending_bytes(self) -> int:
        return self._pending_bytes

    def check_ready(self) -> list[str]:
        problems = []
        if not self._writer.alive:
            problems.append("log writer thread is not running")
        try:
            with self._r_lock:
                self._r.execute("SELECT 1 FROM records LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            problems.append(f"log {self.path} is not readable: {exc}")
        return problems

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._writer.close()
        with contextlib.suppress(sqlite3.Error):
            self._w.close()
            self._r.close()
            self._c.close()
            self._b.close()
