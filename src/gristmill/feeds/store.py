"""Feed metadata on the metadata store's engine (SQLAlchemy Core: SQLite or PostgreSQL).

Uploads (token -> file, tenant, expiry), feeds (status and the structured ``summary`` of the
seed's contract), rejected rows (line, reasons and the original fields: nothing is lost), and
the products a lookup resolves against. Tables carry a ``feeds_`` prefix so they sit beside
the key tables without colliding.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from gristmill.meta.ddl import create_tables

metadata = sa.MetaData()

uploads = sa.Table(
    "feeds_uploads",
    metadata,
    sa.Column("token", sa.String(64), primary_key=True),
    sa.Column("business_id", sa.String(64), nullable=False),
    sa.Column("pack", sa.String(64), nullable=False),
    sa.Column("data_type", sa.String(64), nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("filename", sa.String(300), nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("feed_id", sa.Integer, nullable=True),
)

feeds = sa.Table(
    "feeds_data_feeds",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("business_id", sa.String(64), nullable=False, index=True),
    sa.Column("pack", sa.String(64), nullable=False),
    sa.Column("data_type", sa.String(64), nullable=False),
    sa.Column("filename", sa.String(300), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("record_count", sa.Integer, nullable=False, default=0),
    sa.Column("rows_in", sa.Integer, nullable=False, default=0),
    sa.Column("rejected_count", sa.Integer, nullable=False, default=0),
    sa.Column("summary", sa.Text, nullable=False, default="{}"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

rejects = sa.Table(
    "feeds_rejects",
    metadata,
    sa.Column("feed_id", sa.Integer, nullable=False, index=True),
    sa.Column("line", sa.Integer, nullable=False),
    sa.Column("reasons", sa.Text, nullable=False),
    sa.Column("fields", sa.Text, nullable=False),
)

products = sa.Table(
    "feeds_products",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("business_id", sa.String(64), nullable=False, index=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("name_key", sa.String(200), nullable=False),
    sa.Column("category", sa.String(200), nullable=True),
    sa.Column("unit", sa.String(50), nullable=True),
    sa.Column("selling_price_cents", sa.BigInteger, nullable=True),
    sa.Column("cost_price_cents", sa.BigInteger, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("business_id", "name_key", name="uq_feeds_products_name"),
)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Upload:
    token: str
    business_id: str
    pack: str
    data_type: str
    path: str
    filename: str
    size: int
    expires_at: datetime
    feed_id: int | None = None


@dataclass(frozen=True, slots=True)
class Product:
    id: int
    name: str
    cost_price_cents: int | None


def name_key(name: str) -> str:
    return " ".join(name.split()).casefold()


class FeedStore:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        create_tables(metadata, engine)

    # -- uploads ------------------------------------------------------------------------
    def put_upload(self, up: Upload) -> None:
        with self.engine.begin() as c:
            c.execute(uploads.delete().where(uploads.c.token == up.token))
            c.execute(
                uploads.insert().values(
                    token=up.token,
                    business_id=up.business_id,
                    pack=up.pack,
                    data_type=up.data_type,
                    path=up.path,
                    filename=up.filename,
                    size=up.size,
                    created_at=utcnow(),
                    expires_at=up.expires_at,
                )
            )

    def get_upload(self, token: str) -> Upload | None:
        with self.engine.connect() as c:
            r = c.execute(uploads.select().where(uploads.c.token == token)).mappings().first()
        if r is None:
            return None
        return Upload(
            r["token"],
            r["business_id"],
            r["pack"],
            r["data_type"],
            r["path"],
            r["filename"],
            int(r["size"]),
            _aware(r["expires_at"]),
            r["feed_id"],
        )

    def expired_uploads(self, now: datetime) -> list[Upload]:
        with self.engine.connect() as c:
            tokens = c.execute(
                sa.select(uploads.c.token).where(uploads.c.expires_at < now)
            ).scalars()
            tokens_l = list(tokens)
        return [u for t in tokens_l if (u := self.get_upload(t)) is not None]

    def set_upload_feed(self, token: str, feed_id: int) -> None:
        with self.engine.begin() as c:
            c.execute(uploads.update().where(uploads.c.token == token).values(feed_id=feed_id))

    def drop_upload(self, token: str) -> None:
        with self.engine.begin() as c:
            c.execute(uploads.delete().where(uploads.c.token == token))

    # -- feeds --------------------------------------------------------------------------
    def create_feed(self, business_id: str, pack: str, data_type: str, filename: str) -> int:
        now = utcnow()
        with self.engine.begin() as c:
            res = c.execute(
                feeds.insert().values(
                    business_id=business_id,
                    pack=pack,
                    data_type=data_type,
                    filename=filename[:300],
                    status="processing",
                    record_count=0,
                    rows_in=0,
                    rejected_count=0,
                    summary="{}",
                    created_at=now,
                    updated_at=now,
                )
            )
            key = res.inserted_primary_key
            assert key is not None
            return int(key[0])

    def update_feed(self, feed_id: int, **values: Any) -> None:
        if "summary" in values:
            values["summary"] = json.dumps(values["summary"])
        values["updated_at"] = utcnow()
        with self.engine.begin() as c:
            c.execute(feeds.update().where(feeds.c.id == feed_id).values(**values))

    def claim(self, feed_id: int, from_status: Sequence[str], summary: dict[str, Any]) -> bool:
        """Move a feed to ``transforming`` only if it is in one of ``from_status``: of two
        runs started together (a retry and the worker, two processes), one wins."""
        with self.engine.begin() as c:
            res = c.execute(
                feeds.update()
                .where(feeds.c.id == feed_id, feeds.c.status.in_(list(from_status)))
                .values(status="transforming", summary=json.dumps(summary), updated_at=utcnow())
            )
            return bool(res.rowcount)

    def get_feed(self, feed_id: int) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            r = c.execute(feeds.select().where(feeds.c.id == feed_id)).mappings().first()
        return _feed_row(r) if r is not None else None

    def list_feeds(self, business_id: str | None, limit: int) -> list[dict[str, Any]]:
        q = feeds.select().order_by(feeds.c.id.desc()).limit(limit)
        if business_id is not None:
            q = q.where(feeds.c.business_id == business_id)
        with self.engine.connect() as c:
            return [_feed_row(r) for r in c.execute(q).mappings()]

    def add_rejects(self, feed_id: int, rows: Iterable[tuple[int, list[str], list[str]]]) -> None:
        batch = [
            {"feed_id": feed_id, "line": line, "reasons": json.dumps(r), "fields": json.dumps(f)}
            for line, r, f in rows
        ]
        if batch:
            with self.engine.begin() as c:
                c.execute(rejects.insert(), batch)

    def delete_rejects(self, feed_id: int, line: int | None = None) -> None:
        """All rejects of a feed, or the one of ``line``."""
        q = rejects.delete().where(rejects.c.feed_id == feed_id)
        if line is not None:
            q = q.where(rejects.c.line == line)
        with self.engine.begin() as c:
            c.execute(q)

    def list_rejects(self, feed_id: int, limit: int = 1000) -> list[dict[str, Any]]:
        q = rejects.select().where(rejects.c.feed_id == feed_id).order_by(rejects.c.line)
        with self.engine.connect() as c:
            return [
                {
                    "line": r["line"],
                    "reasons": json.loads(r["reasons"]),
                    "fields": json.loads(r["fields"]),
                }
                for r in c.execute(q.limit(limit)).mappings()
            ]

    # -- products -----------------------------------------------------------------------
    def products(self, business_id: str) -> list[Product]:
        q = sa.select(products.c.id, products.c.name, products.c.cost_price_cents).where(
            products.c.business_id == business_id
        )
        with self.engine.connect() as c:
            return [Product(int(i), str(n), cp) for i, n, cp in c.execute(q)]

    def create_products(
        self, business_id: str, items: Sequence[Mapping[str, Any]]
    ) -> dict[str, int]:
        """Create the named products that do not exist yet (by case-insensitive name) and
        return every name's id: calling twice creates nothing twice."""
        out: dict[str, int] = {}
        with self.engine.begin() as c:
            for item in items:
                name = " ".join(str(item["name"]).split())
                key = name_key(name)
                found = c.execute(
                    sa.select(products.c.id).where(
                        products.c.business_id == business_id, products.c.name_key == key
                    )
                ).scalar()
                if found is None:
                    res = c.execute(
                        products.insert().values(
                            business_id=business_id,
                            name=name,
                            name_key=key,
                            category=item.get("category"),
                            unit=item.get("unit"),
                            selling_price_cents=item.get("selling_price_cents"),
                            cost_price_cents=item.get("cost_price_cents"),
                            created_at=utcnow(),
                        )
                    )
                    pk = res.inserted_primary_key
                    assert pk is not None
                    found = pk[0]
                out[name] = int(found)
        return out

    def set_cost(self, business_id: str, product_id: int, field: str, cents: int) -> None:
        col = {"cost_price": "cost_price_cents", "selling_price": "selling_price_cents"}[field]
        with self.engine.begin() as c:
            c.execute(
                products.update()
                .where(products.c.business_id == business_id, products.c.id == product_id)
                .values({col: cents})
            )


def _feed_row(r: Mapping[Any, Any]) -> dict[str, Any]:
    return {
        "id": int(r["id"]),
        "business_id": r["business_id"],
        "pack": r["pack"],
        "data_type": r["data_type"],
        "filename": r["filename"],
        "status": r["status"],
        "record_count": int(r["record_count"]),
        "rows_in": int(r["rows_in"]),
        "rejected_count": int(r["rejected_count"]),
        "summary": json.loads(r["summary"] or "{}"),
        "created_at": _aware(r["created_at"]).isoformat().replace("+00:00", "Z"),
        "updated_at": _aware(r["updated_at"]).isoformat().replace("+00:00", "Z"),
    }
