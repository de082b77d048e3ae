"""Schema version pins: which version an event without ``schema_version`` means, per source.

A (pack, source, event type) is pinned to the newest version the pack had when that source
first sent the event type unversioned. Publishing v2 then changes nothing for sources already
sending: their events keep validating against (and recording) v1 until an operator moves the
pin (``gristmill schema pin``). The first writer wins through the primary key, so collector
processes sharing one metadata store agree on every pin without talking to each other.
Pins name no person (pack, source, event type, number), so erasure has nothing to remove.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from gristmill.meta.ddl import create_tables

metadata = sa.MetaData()

schema_pins = sa.Table(
    "schema_pins",
    metadata,
    sa.Column("pack", sa.String(64), primary_key=True),
    sa.Column("source", sa.String(128), primary_key=True),
    sa.Column("event_type", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("pinned_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("pinned_by", sa.String(16), nullable=False),  # first-send | operator
)


@dataclass(frozen=True, slots=True)
class Pin:
    pack: str
    source: str
    event_type: str
    version: int
    pinned_at: datetime
    pinned_by: str


class PinStore:
    """Pins in the metadata store (SQLite or PostgreSQL through SQLAlchemy Core)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        create_tables(metadata, engine)

    def get(self, pack: str, source: str, event_type: str) -> int | None:
        with self.engine.connect() as c:
            v = c.execute(
                sa.select(schema_pins.c.version).where(
                    schema_pins.c.pack == pack,
                    schema_pins.c.source == source,
                    schema_pins.c.event_type == event_type,
                )
            ).scalar()
        return None if v is None else int(v)

    def pin_first(self, pack: str, source: str, event_type: str, version: int) -> int:
        """Pin to ``version`` unless a pin exists; returns the pin that holds (the first
        writer's, when several processes race)."""
        have = self.get(pack, source, event_type)
        if have is not None:
            return have
        try:
            with self.engine.begin() as c:
                c.execute(
                    schema_pins.insert().values(
                        pack=pack,
                        source=source,
                        event_type=event_type,
                        version=version,
                        pinned_at=datetime.now(UTC),
                        pinned_by="first-send",
                    )
                )
        except sa.exc.IntegrityError:
            pass  # another process pinned it first: its pin holds
        got = self.get(pack, source, event_type)
        assert got is not None
        return got

    def set(self, pack: str, source: str, event_type: str, version: int) -> None:
        """An operator's move (a source migrated to a new version, or held back)."""
        key = {"pack": pack, "source": source, "event_type": event_type}
        values = {"version": version, "pinned_at": datetime.now(UTC), "pinned_by": "operator"}
        with self.engine.begin() as c:
            res = c.execute(
                schema_pins.update()
                .where(*(schema_pins.c[k] == v for k, v in key.items()))
                .values(**values)
            )
            if not res.rowcount:
                c.execute(schema_pins.insert().values(**key, **values))

    def list(self, pack: str | None = None) -> list[Pin]:
        q = sa.select(schema_pins).order_by(
            schema_pins.c.pack, schema_pins.c.source, schema_pins.c.event_type
        )
        if pack is not None:
            q = q.where(schema_pins.c.pack == pack)
        with self.engine.connect() as c:
            return [
                Pin(
                    r.pack,
                    r.source,
                    r.event_type,
                    int(r.version),
                    _utc(r.pinned_at),
                    r.pinned_by,
                )
                for r in c.execute(q)
            ]


def _utc(dt: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were written in UTC."""
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)
