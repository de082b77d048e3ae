"""Metadata store on SQLAlchemy Core, so the same code runs on SQLite (embedded) and PostgreSQL.

Tables are created with ``create_all`` and a ``schema_version`` row; when the first change to
an existing table lands, Alembic migrations take over from that version.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from gristmill.core.ids import hash_token, new_token
from gristmill.meta.ddl import create_tables
from gristmill.meta.governance import GovernanceStore, write_audit
from gristmill.meta.schema_pins import PinStore
from gristmill.meta.traits import TraitStore

SCHEMA_VERSION = 1

metadata = sa.MetaData()

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # write | secret
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("pack", sa.String(64), nullable=True),
    sa.Column("source", sa.String(128), nullable=True),
    sa.Column("role", sa.String(64), nullable=True),
    sa.Column("claims", sa.Text, nullable=False, default="{}"),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

schema_info = sa.Table(
    "schema_info",
    metadata,
    sa.Column("version", sa.Integer, nullable=False),
)

KEY_PREFIX = {"write": "gmw", "secret": "gms"}


@dataclass(frozen=True, slots=True)
class ApiKey:
    key_id: str
    kind: str
    name: str
    prefix: str
    pack: str | None
    source: str | None
    role: str | None
    claims: dict[str, Any]
    created_at: datetime
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def _row_to_key(row: Mapping[Any, Any]) -> ApiKey:
    return ApiKey(
        key_id=row["key_id"],
        kind=row["kind"],
        name=row["name"],
        prefix=row["prefix"],
        pack=row["pack"],
        source=row["source"],
        role=row["role"],
        claims=json.loads(row["claims"] or "{}"),
        created_at=row["created_at"],
        revoked_at=row["revoked_at"],
    )


class MetaStore:
    def __init__(self, url: str) -> None:
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine = sa.create_engine(url, **kwargs)
        if url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        create_tables(metadata, self.engine)
        with self.engine.begin() as c:  # one statement, so two first starts write one row
            c.execute(
                schema_info.insert().from_select(
                    ["version"],
                    sa.select(sa.literal(SCHEMA_VERSION)).where(
                        ~sa.exists(sa.select(schema_info.c.version))
                    ),
                )
            )
        self.governance = GovernanceStore(self.engine)
        self.traits = TraitStore(self.engine)
        self.pins = PinStore(self.engine)

    # -- keys ---------------------------------------------------------------------------
    def create_key(
        self,
        kind: str,
        name: str,
        *,
        pack: str | None = None,
        source: str | None = None,
        role: str | None = None,
        claims: dict[str, Any] | None = None,
    ) -> tuple[ApiKey, str]:
        """Create a key; returns the record and the token, which is never stored in clear."""
        if kind not in KEY_PREFIX:
            raise ValueError(f"unknown key kind {kind!r}")
        token = new_token(KEY_PREFIX[kind])
        key_id = new_token("key", 9).removeprefix("key_")
        row = {
            "key_id": key_id,
            "kind": kind,
            "name": name,
            "prefix": token[:10],
            "token_hash": hash_token(token),
            "pack": pack,
            "source": source,
            "role": role,
            "claims": json.dumps(claims or {}, sort_keys=True),
            "created_at": datetime.now(UTC),
            "revoked_at": None,
        }
        with self.engine.begin() as c:
            c.execute(api_keys.insert().values(**row))
            write_audit(c, "cli", "key.created", key_id, kind=kind, pack=pack, role=role, name=name)
        return _row_to_key(row), token

    def lookup_key(self, token: str) -> ApiKey | None:
        with self.engine.connect() as c:
            row = c.execute(
                sa.select(api_keys).where(api_keys.c.token_hash == hash_token(token))
            ).first()
        return _row_to_key(row._mapping) if row else None

    def key_active(self, key_id: str) -> bool:
        with self.engine.connect() as c:
            row = c.execute(
                sa.select(api_keys.c.revoked_at).where(api_keys.c.key_id == key_id)
            ).first()
        return row is not None and row.revoked_at is None

    def list_keys(self, *, include_revoked: bool = False) -> list[ApiKey]:
        q = sa.select(api_keys).order_by(api_keys.c.created_at)
        if not include_revoked:
            q = q.where(api_keys.c.revoked_at.is_(None))
        with self.engine.connect() as c:
            return [_row_to_key(r._mapping) for r in c.execute(q)]

    def revoke_key(self, key_id: str) -> bool:
        with self.engine.begin() as c:
            res = c.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=datetime.now(UTC))
            )
            if res.rowcount:
                write_audit(c, "cli", "key.revoked", key_id)
        return bool(res.rowcount)

    def close(self) -> None:
        self.traits.close()
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    # Overwrite deleted content: an erasure request's identifiers are wiped from its row
    # when it completes, and must not survive in a free page.
    cur.execute("PRAGMA secure_delete=ON")
    cur.close()
