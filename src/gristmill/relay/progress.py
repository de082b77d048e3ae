"""Where a relay keeps its position, its lease and its processed markers.

Two stores with the same contract: the metadata store (SQLite or PostgreSQL through SQLAlchemy
Core, the default) and Redis (``relay.redis_url``). A marker is the seed's idempotency key,
``<prefix>:processed:<consumer>:<event_id>``, written in the same transaction as the position
that passes its row, so the two never disagree.

The lease is fencing, not only exclusion: ``commit`` succeeds only while this relay still holds
the lease. A relay paused past its lease (another took over) finds out at its next commit and
stops; what it appended meanwhile is a duplicate the warehouse drops, never a loss.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

import sqlalchemy as sa

from gristmill.meta.ddl import create_tables
from gristmill.relay.outbox import Position


class LeaseLost(Exception):
    """Another relay holds this consumer's lease now."""


def marker_key(prefix: str, consumer: str, event_id: str) -> str:
    return f"{prefix}:processed:{consumer}:{event_id}"


class Progress(Protocol):
    holder: str

    def acquire(self) -> str | None:
        """Take or renew the lease; None when taken, else the current holder."""

    def position(self) -> Position: ...

    def processed(self, event_ids: Sequence[str]) -> set[str]:
        """Which of these events already carry a processed marker."""

    def commit(self, position: Position, event_ids: Sequence[str]) -> None:
        """Move the position and mark events processed, atomically; :class:`LeaseLost` if
        the lease is no longer ours."""

    def prune(self) -> int:
        """Drop markers older than their TTL; the position covers their rows."""

    def release(self) -> None: ...

    def close(self) -> None: ...


_md = sa.MetaData()
relay_state = sa.Table(
    "relay_state",
    _md,
    sa.Column("consumer", sa.String(64), primary_key=True),
    sa.Column("position", sa.Text, nullable=False),
    sa.Column("holder", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)
relay_markers = sa.Table(
    "relay_markers",
    _md,
    sa.Column("key", sa.String(400), primary_key=True),
    sa.Column("consumer", sa.String(64), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Index("relay_markers_age", "consumer", "created_at"),
)


def new_holder() -> str:
    return uuid.uuid4().hex[:16]


class MetaProgress:
    """Position, lease and markers in the metadata store (SQLAlchemy Core)."""

    def __init__(
        self, engine: sa.Engine, consumer: str, prefix: str, lease_ttl_s: float, marker_ttl_s: float
    ) -> None:
        self.engine = engine
        self.consumer = consumer
        self.prefix = prefix
        self.lease_ttl_s = lease_ttl_s
        self.marker_ttl_s = marker_ttl_s
        self.holder = new_holder()
        compiled = _insert_ignore(engine).compile(
            dialect=engine.dialect, column_keys=["key", "consumer", "created_at"]
        )
        self._insert = (str(compiled), list(compiled.positiontup or []))
        create_tables(_md, engine)
        # Two relays starting at once may both insert: the loser's insert fails, the row exists.
        with contextlib.suppress(sa.exc.IntegrityError), self.engine.begin() as c:
            exists = c.execute(
                sa.select(relay_state.c.consumer).where(relay_state.c.consumer == consumer)
            ).first()
            if exists is None:
                c.execute(
                    relay_state.insert().values(
                        consumer=consumer,
                        position=json.dumps(Position().as_dict()),
                        holder=None,
                        lease_until=0.0,
                        updated_at=time.time(),
                    )
                )

    def _mine(self) -> Any:
        return sa.and_(relay_state.c.consumer == self.consumer, relay_state.c.holder == self.holder)

    def acquire(self) -> str | None:
        now = time.time()
        with self.engine.begin() as c:
            res = c.execute(
                relay_state.update()
                .where(
                    relay_state.c.consumer == self.consumer,
                    sa.or_(
                        relay_state.c.holder.is_(None),
                        relay_state.c.holder == self.holder,
                        relay_state.c.lease_until < now,
                    ),
                )
                .values(holder=self.holder, lease_until=now + self.lease_ttl_s)
            )
            if res.rowcount == 1:
                return None
            row = c.execute(
                sa.select(relay_state.c.holder).where(relay_state.c.consumer == self.consumer)
            ).first()
        return str(row[0]) if row else "?"

    def position(self) -> Position:
        with self.engine.connect() as c:
            doc = c.execute(
                sa.select(relay_state.c.position).where(relay_state.c.consumer == self.consumer)
            ).scalar_one()
        return Position.of(json.loads(doc))

    def processed(self, event_ids: Sequence[str]) -> set[str]:
        keys = {marker_key(self.prefix, self.consumer, e): e for e in event_ids}
        found: set[str] = set()
        with self.engine.connect() as c:
            chunk = list(keys)
            for i in range(0, len(chunk), 500):
                q = sa.select(relay_markers.c.key).where(
                    relay_markers.c.key.in_(chunk[i : i + 500])
                )
                found.update(keys[k] for (k,) in c.execute(q))
        return found

    def commit(self, position: Position, event_ids: Sequence[str]) -> None:
        now = time.time()
        with self.engine.begin() as c:
            res = c.execute(
                relay_state.update()
                .where(self._mine())
                .values(
                    position=json.dumps(position.as_dict()),
                    lease_until=now + self.lease_ttl_s,
                    updated_at=now,
                )
            )
            if res.rowcount != 1:
                raise LeaseLost(f"relay {self.consumer!r}: another relay took the lease")
            if event_ids:
                # The driver's executemany on the compiled statement: SQLAlchemy's per-row
                # parameter processing cost more than the inserts themselves.
                sql, order = self._insert
                rows = [
                    {
                        "key": marker_key(self.prefix, self.consumer, e),
                        "consumer": self.consumer,
                        "created_at": now,
                    }
                    for e in event_ids
                ]
                params: Any = [tuple(r[k] for k in order) for r in rows] if order else rows
                c.exec_driver_sql(sql, params)

    def prune(self) -> int:
        cutoff = time.time() - self.marker_ttl_s
        with self.engine.begin() as c:
            res = c.execute(
                relay_markers.delete().where(
                    relay_markers.c.consumer == self.consumer, relay_markers.c.created_at < cutoff
                )
            )
        return int(res.rowcount or 0)

    def release(self) -> None:
        with self.engine.begin() as c:
            c.execute(relay_state.update().where(self._mine()).values(holder=None, lease_until=0.0))

    def close(self) -> None:
        pass  # the engine belongs to the metadata store


def _insert_ignore(engine: sa.Engine) -> Any:
    """A marker may exist already (a re-read after a crash): keep the first one."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(relay_markers).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(relay_markers).on_conflict_do_nothing()


# Redis: one script per state change, so a check and its write are one atomic step.
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return false
end
return cur
"""
_COMMIT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
for i = 5, #ARGV do redis.call('SET', ARGV[i], '1', 'EX', ARGV[4]) end
return 1
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisProgress:
    """Position, lease and markers in Redis; markers expire by themselves (``EX``)."""

    def __init__(
        self, url: str, consumer: str, prefix: str, lease_ttl_s: float, marker_ttl_s: float
    ) -> None:
        import redis

        self.r = redis.Redis.from_url(url)
        self.consumer = consumer
        self.prefix = prefix
        self.lease_ms = int(lease_ttl_s * 1000)
        self.marker_ttl = max(1, int(marker_ttl_s))
        self.holder = new_holder()
        self.lease_key = f"{prefix}:relay:{consumer}:lease"
        self.pos_key = f"{prefix}:relay:{consumer}:position"
        self._acquire = self.r.register_script(_ACQUIRE)
        self._commit = self.r.register_script(_COMMIT)
        self._release = self.r.register_script(_RELEASE)

    def acquire(self) -> str | None:
        got = self._acquire(keys=[self.lease_key], args=[self.holder, self.lease_ms])
        return None if got is None else _text(got)

    def position(self) -> Position:
        doc = self.r.get(self.pos_key)
        return Position.of(json.loads(_text(doc)) if doc else None)

    def processed(self, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        values = self.r.mget([marker_key(self.prefix, self.consumer, e) for e in event_ids])
        return {e for e, v in zip(event_ids, values, strict=True) if v is not None}

    def commit(self, position: Position, event_ids: Sequence[str]) -> None:
        args: list[Any] = [
            self.holder,
            self.lease_ms,
            json.dumps(position.as_dict()),
            self.marker_ttl,
            *(marker_key(self.prefix, self.consumer, e) for e in event_ids),
        ]
        if not self._commit(keys=[self.lease_key, self.pos_key], args=args):
            raise LeaseLost(f"relay {self.consumer!r}: another relay took the lease")

    def prune(self) -> int:
        return 0  # markers carry their own expiry

    def release(self) -> None:
        self._release(keys=[self.lease_key], args=[self.holder])

    def close(self) -> None:
        self.r.close()


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
