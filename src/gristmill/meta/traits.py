"""User traits over time, for enrichment "as of the event's time".

Every trait event (a pack's ``enrichment.traits.from_events``) appends one row: the user, the
time the traits took effect (the event's ``occurred_at``) and the traits. A lookup merges the
rows up to a given time, so an event from March gets the role the user had in March even
when it arrives after a change in June. The collector keeps recently used histories in
memory; rows are written by a background thread so a trait event never waits on the store.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from gristmill.meta.ddl import create_tables

metadata = sa.MetaData()

user_traits = sa.Table(
    "user_traits",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pack", sa.String(64), nullable=False),
    sa.Column("user_id", sa.String(512), nullable=False),
    sa.Column("valid_from_us", sa.BigInteger, nullable=False),
    sa.Column("traits", sa.Text, nullable=False),
    sa.Index("user_traits_lookup", "pack", "user_id", "valid_from_us"),
)

log = logging.getLogger(__name__)
History = list[tuple[int, dict[str, Any]]]
_STOP = object()


class TraitStore:
    def __init__(self, engine: sa.Engine, *, cache_users: int = 100_000) -> None:
        self.engine = engine
        create_tables(metadata, engine)
        self._cache: OrderedDict[tuple[str, str], History] = OrderedDict()
        self._cap = cache_users
        self._lock = threading.Lock()
        self._q: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._pending = 0
        self._idle = threading.Condition()
        self._writer = threading.Thread(target=self._write_loop, name="traits", daemon=True)
        self._writer.start()

    def _history(self, pack: str, user: str) -> History:
        key = (pack, user)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        with self.engine.connect() as c:
            rows = c.execute(
                sa.select(user_traits.c.valid_from_us, user_traits.c.traits)
                .where(user_traits.c.pack == pack, user_traits.c.user_id == user)
                .order_by(user_traits.c.valid_from_us, user_traits.c.id)
            ).all()
        hist: History = [(int(r.valid_from_us), json.loads(r.traits)) for r in rows]
        with self._lock:
            have = self._cache.get(key)
            if have is not None:  # recorded meanwhile: the in-memory one is newer
                return have
            self._cache[key] = hist
            if len(self._cache) > self._cap:
                self._cache.popitem(last=False)
        return hist

    def record(self, pack: str, user: str, at_us: int, traits: dict[str, Any]) -> None:
        hist = self._history(pack, user)
        with self._lock:
            i = bisect.bisect_right([t for t, _ in hist], at_us)
            hist.insert(i, (at_us, dict(traits)))
        with self._idle:
            self._pending += 1
        self._q.put((pack, user, at_us, json.dumps(traits, sort_keys=True, default=str)))

    def as_of(self, pack: str, user: str, at_us: int) -> tuple[dict[str, Any], int | None]:
        """The traits merged up to ``at_us``, and when the user's first trait row took effect
        (``None`` when the user had none by then)."""
        hist = self._history(pack, user)
        with self._lock:
            merged: dict[str, Any] = {}
            first = None
            for t, traits in hist:
                if t > at_us:
                    break
                first = t if first is None else first
                merged.update(traits)
        return merged, first

    def forget(self, users: Sequence[str]) -> int:
        """Erasure: every pack's trait rows of these users, and their cached histories."""
        self.flush()
        with self._lock:
            for key in [k for k in self._cache if k[1] in set(users)]:
                del self._cache[key]
        with self.engine.begin() as c:
            res = c.execute(user_traits.delete().where(user_traits.c.user_id.in_(list(users))))
        return int(res.rowcount or 0)

    def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every recorded row is in the store."""
        with self._idle:
            self._idle.wait_for(lambda: self._pending == 0, timeout_s)

    def _write_loop(self) -> None:
        while True:
            item = self._q.get()
            if item is _STOP:
                return
            rows: list[tuple[str, str, int, str]] = [item]  # type: ignore[list-item]
            with contextlib.suppress(queue.Empty):
                while len(rows) < 500:
                    nxt = self._q.get_nowait()
                    if nxt is _STOP:
                        self._q.put(_STOP)
                        break
                    rows.append(nxt)  # type: ignore[arg-type]
            try:
                with self.engine.begin() as c:  # lost rows only cost enrichment, not events
                    c.execute(
                        user_traits.insert(),
                        [
                            {"pack": p, "user_id": u, "valid_from_us": t, "traits": j}
                            for p, u, t, j in rows
                        ],
                    )
            except sa.exc.SQLAlchemyError:
                log.exception("could not store %d trait rows", len(rows))
            finally:
                with self._idle:
                    self._pending -= len(rows)
                    self._idle.notify_all()

    def close(self) -> None:
        self.flush()
        self._q.put(_STOP)
        self._writer.join(timeout=10)
