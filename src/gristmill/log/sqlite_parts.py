"""The embedded log split into partitions: one SQLite file each, so N collector processes
(``gristmill serve --workers N``) each append to their own file with their own group commit
instead of queueing behind one write lock.

It has the shape the broker logs have (:class:`~gristmill.log.base.PartitionedLog`): the loader
pool leases a partition, loads it through :meth:`view` with the ordinary loader under the group
``<group>.p<n>``, and the warehouse stores one offset per partition in the load transaction.
Each file numbers its records from 1 (``AUTOINCREMENT``); record ``k`` of partition ``p`` of
``P`` is offset ``k * P + p`` outside, so offsets are unique across partitions (batch and
quarantine ids are built from them) and increase within one.

Leases are rows in the partition's own file (holder, expiry on the wall clock) taken in a write
transaction, so two processes never both hold one; a killed loader's lease lapses after
``lease_ttl_s``.

The byte cap is on the sum of the files: each file keeps its own running total (appends and
commits move it in their transactions) and an appender adds its siblings' totals when it
re-reads its own (see :mod:`gristmill.log.sqlite`).

Per-source order: a source's events keep their order within a partition, not across them. A
worker appends to its own partition and requests from one source may reach any worker, so two
requests of one source in flight at once may load in either order (events carry their own
``occurred_at``; dedupe is by event id, never by order).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import itertools
import os
import socket
import sqlite3
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from gristmill.core.envelope import Frame, Layout
from gristmill.log.base import (
    LogBatch,
    LogEntry,
    LogRecord,
    LogSnapshot,
    PartitionDepth,
    PartitionView,
)
from gristmill.log.broker import partition_group
from gristmill.log.sqlite import SQLiteLog, connect

_LEASES = """
CREATE TABLE IF NOT EXISTS leases (
    grp TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS layout (
    partitions INTEGER NOT NULL
);
"""


def legacy_pending(path: Path) -> int:
    """Records a single-file log still holds unloaded (0 when there is no such file)."""
    if not path.exists():
        return 0
    conn = sqlite3.connect(path, timeout=30)
    try:
        row = conn.execute(
            'SELECT count(*) FROM records WHERE "offset" > '
            '(SELECT coalesce(min("offset"), 0) FROM offsets)'
        ).fetchone()
    except sqlite3.OperationalError:  # not a log file we made (no tables yet)
        return 0
    finally:
        conn.close()
    return int(row[0])


def stored_layout(path: Path) -> int | None:
    """The partition count partition 0's file was made for (None: no such file yet)."""
    if not path.exists():
        return None
    conn = sqlite3.connect(path, timeout=30)
    try:
        row = conn.execute("SELECT partitions FROM layout").fetchone()
    except sqlite3.OperationalError:  # made, but not finished (a crash during the first open)
        return None
    finally:
        conn.close()
    return None if row is None else int(row[0])


class PartitionedSQLiteLog:
    name = "sqlite"
    partitioned = True
    background_commit = True
    idle_when_empty = True

    def __init__(
        self,
        directory: Path,
        *,
        partitions: int,
        max_bytes: int,
        retry_after_s: int = 5,
        group_commit_max: int = 512,
        lease_ttl_s: float = 10.0,
        append_partition: int | None = None,
        legacy: Path | None = None,
    ) -> None:
        if append_partition is not None and not 0 <= append_partition < partitions:
            raise ValueError(
                f"log.append_partition {append_partition} is not one of the {partitions} partitions"
            )
        if legacy is not None and (held := legacy_pending(legacy)):
            raise ValueError(
                f"{legacy} still holds {held} unloaded records: load them with "
                "log.partitions=1 (gristmill load, or serve) before splitting the log"
            )
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.partitions = partitions
        self.max_bytes = max_bytes
        self.lease_ttl_s = lease_ttl_s
        self.append_partition = append_partition
        self._rr = itertools.count()
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._totals: list[tuple[sqlite3.Connection, threading.Lock]] = []
        """Per file: reads the byte total for the siblings' cap checks."""
        self._leases: list[tuple[sqlite3.Connection, threading.Lock]] = []
        """Per file: lease transactions, apart so an append's cap check never waits on one."""
        self.files: list[SQLiteLog] = []
        # Files are created under an exclusive lock: workers starting together must not each
        # give a new file its own identity, nor disagree about the layout.
        with open(directory / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            stored = stored_layout(self.path(0))
            if stored is not None and stored != partitions:  # refused before any file is made
                raise ValueError(
                    f"the log in {directory} has {stored} partitions, not {partitions}: "
                    "offsets encode the count, so it is fixed once the files exist"
                )
            for p in range(partitions):
                path = self.path(p)
                self.files.append(
                    SQLiteLog(
                        path,
                        max_bytes=max_bytes,
                        retry_after_s=retry_after_s,
                        group_commit_max=group_commit_max,
                        elsewhere=functools.partial(self._pending_elsewhere, p),
                    )
                )
                conn = connect(path)
                conn.executescript(_LEASES)
                self._leases.append((conn, threading.Lock()))
                self._totals.append((connect(path), threading.Lock()))
            self._check_layout()
        self.log_id = self.files[0].log_id
        """Partition 0's identity names the whole set (the warehouse keys offsets by it)."""

    def path(self, partition: int) -> Path:
        return self.directory / f"p{partition}.sqlite"

    def _check_layout(self) -> None:
        conn = self._leases[0][0]
        if conn.execute("SELECT partitions FROM layout").fetchone() is None:
            conn.execute("INSERT INTO layout (partitions) VALUES (?)", (self.partitions,))

    # -- offsets ------------------------------------------------------------------------
    def encode(self, partition: int, k: int) -> int:
        return k * self.partitions + partition if k > 0 else 0

    def decode(self, partition: int, offset: int) -> int:
        return (offset - partition) // self.partitions if offset > 0 else 0

    # -- append -------------------------------------------------------------------------
    def _pending_elsewhere(self, partition: int) -> int:
        total = 0
        for q, (conn, lock) in enumerate(self._totals):
            if q == partition:
                continue
            with lock:
                row = conn.execute("SELECT appended - freed FROM log_bytes").fetchone()
            total += int(row[0]) if row else 0
        return total

    def _target(self) -> SQLiteLog:
        if self.append_partition is not None:
            return self.files[self.append_partition]
        return self.files[next(self._rr) % self.partitions]

    def append(self, records: Sequence[LogRecord]) -> None:
        self._target().append(records)

    async def append_async(self, records: Sequence[LogRecord]) -> None:
        await self._target().append_async(records)

    async def append_frame_async(self, frame: Frame, layout: Layout) -> None:
        await self._target().append_frame_async(frame, layout)

    # -- consume (whole-log calls are for one-partition logs; loaders use views) ----------
    def view(self, partition: int) -> SQLitePartition:
        return SQLitePartition(self, partition)

    def read(
        self, group: str, max_events: int, timeout_s: float, after: int | None = None
    ) -> LogBatch:
        raise TypeError("the sqlite log is partitioned: read through view(partition)")

    def commit(self, group: str, offset: int) -> None:
        raise TypeError("the sqlite log is partitioned: commit through view(partition)")

    def committed(self, group: str) -> int:
        raise TypeError("the sqlite log is partitioned: ask view(partition)")

    # -- leases -------------------------------------------------------------------------
    def _claim(self, group: str, partition: int, *, take: bool) -> bool:
        """Renew our lease (and with ``take``, take a free or lapsed one) in one write
        transaction of the partition's file."""
        conn, lock = self._leases[partition]
        now = time.time()
        with lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute(
                    "SELECT holder, expires_at FROM leases WHERE grp = ?", (group,)
                ).fetchone()
                ours = row is not None and row[0] == self._holder
                free = row is None or float(row[1]) < now
                ok = ours or (take and free)
                if ok:
                    conn.execute(
                        "INSERT INTO leases (grp, holder, expires_at) VALUES (?, ?, ?) "
                        "ON CONFLICT (grp) DO UPDATE SET holder = excluded.holder, "
                        "expires_at = excluded.expires_at",
                        (group, self._holder, now + self.lease_ttl_s),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return ok

    def lease(self, group: str, partition: int) -> bool:
        return self._claim(group, partition, take=True)

    def lease_held(self, group: str, partition: int) -> bool:
        return self._claim(group, partition, take=False)

    def release(self, group: str, partition: int) -> None:
        conn, lock = self._leases[partition]
        with lock:
            conn.execute("DELETE FROM leases WHERE grp = ? AND holder = ?", (group, self._holder))

    # -- observe ------------------------------------------------------------------------
    def snapshot(self, group: str, after_offset: int | None = None) -> LogSnapshot:
        """Whole-log snapshot past each partition's committed offset (for depth)."""
        after = {
            p: self.view(p).committed(partition_group(group, p)) for p in range(self.partitions)
        }
        return self.snapshot_partitions(after)

    def snapshot_partitions(self, after: dict[int, int]) -> LogSnapshot:
        """Counters summed over the files, ``pending`` past ``after[partition]``. Each file is
        read in its own transaction: the caller (conservation) makes the set consistent by
        checking the warehouse's offsets did not move meanwhile."""
        received: dict[tuple[str, str], int] = defaultdict(int)
        pending: dict[tuple[str, str], int] = defaultdict(int)
        suppressed: dict[tuple[str, str], int] = defaultdict(int)
        oldest: dict[str, int] = {}
        oldest_any: int | None = None
        depths: dict[int, tuple[int, int, int]] = {}
        for p, f in enumerate(self.files):
            s = f.snapshot(partition_group("loader", p), self.decode(p, after.get(p, 0)))
            for k, n in s.received.items():
                received[k] += n
            for k, n in s.pending.items():
                pending[k] += n
            for k, n in s.suppressed.items():
                suppressed[k] += n
            for pack, t in s.oldest_pending.items():
                oldest[pack] = min(oldest.get(pack, t), t)
            if s.oldest_pending_received_at is not None:
                t = s.oldest_pending_received_at
                oldest_any = t if oldest_any is None else min(oldest_any, t)
            depths[p] = (s.depth_records, s.depth_events, s.depth_bytes)
        return LogSnapshot(
            received=dict(received),
            pending=dict(pending),
            committed_offset=0,
            depth_records=sum(d[0] for d in depths.values()),
            depth_events=sum(d[1] for d in depths.values()),
            depth_bytes=sum(d[2] for d in depths.values()),
            oldest_pending_received_at=oldest_any,
            oldest_pending=oldest,
            suppressed=dict(suppressed),
            by_partition=depths,
        )

    def depth(self, group: str = "loader") -> list[PartitionDepth]:
        """What each partition holds past its loader's committed offset."""
        return self.snapshot(group).partition_depths()

    @property
    def pending_bytes(self) -> int:
        return self._pending_elsewhere(-1)

    def scrub(self) -> dict[str, int]:
        """Scrub every file (see :meth:`SQLiteLog.scrub`); sizes and busy counts summed."""
        total: dict[str, int] = defaultdict(int)
        for f in self.files:
            for k, v in f.scrub().items():
                total[k] += v
        return dict(total)

    def check_ready(self) -> list[str]:
        return [problem for f in self.files for problem in f.check_ready()]

    def close(self) -> None:
        for f in self.files:
            f.close()
        for conn, lock in self._totals + self._leases:
            with lock, contextlib.suppress(sqlite3.Error):
                conn.close()


class SQLitePartition(PartitionView):
    """One partition as an :class:`~gristmill.log.base.EventLog` for the ordinary loader, in
    the partitioned log's offsets."""

    background_commit = True
    idle_when_empty = True

    def __init__(self, parent: PartitionedSQLiteLog, partition: int) -> None:
        self.parent = parent
        self.partition = partition
        self.file = parent.files[partition]
        self.name = parent.name
        self.log_id = parent.log_id

    def read(
        self, group: str, max_events: int, timeout_s: float, after: int | None = None
    ) -> LogBatch:
        p = self.partition
        inner = None if after is None else self.parent.decode(p, after)
        batch = self.file.read(group, max_events, timeout_s, after=inner)
        return LogBatch(
            group, [LogEntry(self.parent.encode(p, e.offset), e.record) for e in batch.entries]
        )

    def commit(self, group: str, offset: int) -> None:
        self.file.commit(group, self.parent.decode(self.partition, offset))

    def committed(self, group: str) -> int:
        return self.parent.encode(self.partition, self.file.committed(group))

    def snapshot(self, group: str, after_offset: int | None = None) -> LogSnapshot:
        """This partition alone (the loader asks it for its oldest pending record)."""
        after = None if after_offset is None else self.parent.decode(self.partition, after_offset)
        snap = self.file.snapshot(group, after)
        committed = self.parent.encode(self.partition, snap.committed_offset)
        return dataclasses.replace(snap, committed_offset=committed)

    def check_ready(self) -> list[str]:
        return self.file.check_ready()

    def close(self) -> None:
        """The files belong to the whole log, closed with it."""
