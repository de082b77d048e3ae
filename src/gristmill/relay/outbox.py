"""Reading an application's outbox table in commit order.

Reading ``id > last seen`` skips rows: a sequence hands out ids before commit, so a slow
transaction can commit id 7 after id 9 was read. Each reader here only returns rows whose
position can no longer be overtaken by a row committed later:

* **PostgreSQL** orders rows by ``(txid, id)``, where ``txid`` is the writing transaction's
  64-bit id (``xid8 DEFAULT pg_current_xact_id()``), and only returns rows with
  ``txid < pg_snapshot_xmin(pg_current_snapshot())``. Every transaction below the snapshot's
  ``xmin`` has ended: its rows are visible now or never will be, and every transaction still
  running or started later has a ``txid ≥ xmin``. So the set of rows below the horizon is
  final, the horizon never moves back, and paging through that set by ``(txid, id)`` misses
  nothing (docs/sources.md has the full argument).
* **MySQL / MariaDB (InnoDB)** hands out ``AUTO_INCREMENT`` ids at insert time, in increasing
  order, and commits in any order, and it exposes no transaction-id horizon to SQL. So the
  relay builds one from ids and time: each read first notes ``(NOW(6), MAX(id))`` in one
  autocommit statement. Every row with an id up to that ``MAX(id)`` got its id before that
  moment, so its transaction had started by then. Once the oldest transaction still running
  (``information_schema.INNODB_TRX``, other than the relay's own) started *after* that
  moment, every such transaction has ended, and the ids up to that ``MAX(id)`` are final.
  Rows are read by ``id`` only below the newest final mark. ``INNODB_TRX`` is a cache
  refreshed at most every 0.1 s, so a mark is only judged from a list read 0.5 s after it.
  ``trx_started`` has whole seconds, so the mark trails by one to two seconds under steady
  writes; a transaction left open anywhere on the server holds it back (as on PostgreSQL).
  Needs the PROCESS privilege, and ids the database assigns (an id an application picks
  itself could be lower than one already read).
* **SQLite** admits one writer at a time and assigns the rowid inside the write lock, so id
  order is commit order; ``id > last`` is exact there (with ``AUTOINCREMENT``, ids are never
  reused after deletes).

Identifiers come from settings and must match a plain-name pattern; values are bound.
"""

from __future__ import annotations

import re
import sqlite3
from collections import deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlglot.expressions as exp

from gristmill.config import OutboxSettings

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where a relay is in the outbox: every row at or before it has been handed on.
    ``txid`` is 0 on SQLite (id order is commit order there)."""

    txid: int = 0
    id: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"txid": self.txid, "id": self.id}

    @classmethod
    def of(cls, doc: dict[str, Any] | None) -> Position:
        return cls(int(doc["txid"]), int(doc["id"])) if doc else cls()


@dataclass(frozen=True, slots=True)
class Row:
    position: Position
    event_id: str
    payload: bytes


class Outbox(Protocol):
    kind: str

    def read(self, after: Position, limit: int) -> list[Row]:
        """The next rows after ``after`` in commit order, only from the settled part."""

    def horizon(self) -> int | None:
        """PostgreSQL: the oldest transaction id still running (rows at or past it wait)."""

    def frontier(self) -> int | None:
        """PostgreSQL: the next transaction id; once the horizon reaches it, every
        transaction that ended before this call is below the horizon."""

    def close(self) -> None: ...


def _ident(name: str) -> exp.Identifier:
    if not _NAME.match(name):
        raise ValueError(f"outbox identifier {name!r} must match {_NAME.pattern}")
    return exp.to_identifier(name, quoted=True)


def _table(name: str) -> exp.Table:
    parts = name.split(".")
    if len(parts) > 2:
        raise ValueError(f"outbox table {name!r}: use table or schema.table")
    if len(parts) == 2:
        return exp.Table(this=_ident(parts[1]), db=_ident(parts[0]))
    return exp.Table(this=_ident(parts[0]))


def _col(name: str) -> exp.Column:
    return exp.Column(this=_ident(name))


def _ph(name: str) -> exp.Placeholder:
    return exp.Placeholder(this=name)


def postgres_read_sql(cfg: OutboxSettings) -> str:
    """``(txid, id) > (:txid, :id)`` among settled transactions, in ``(txid, id)`` order.

    A row comparison, so the ``(txid, id)`` index of the outbox DDL serves both the range and
    the order (a plain index scan that stops after ``n`` rows, even inside one transaction of
    a million rows). Ordered by the ``xid8`` column itself: the text the query returns would
    sort ``"10000"`` before ``"9999"``."""
    txid, rid = _col(cfg.txid_column), _col(cfg.id_column)
    x8 = exp.DataType.build("xid8", udt=True)
    at = exp.cast(_ph("txid"), x8)
    # A scalar subquery: computed once per statement (an InitPlan), not once per row, and
    # usable as an index bound. Same statement, same snapshot.
    horizon = exp.Subquery(
        this=exp.select(
            exp.Anonymous(
                this="pg_snapshot_xmin", expressions=[exp.Anonymous(this="pg_current_snapshot")]
            )
        )
    )
    where = exp.and_(
        exp.GT(
            this=exp.Tuple(expressions=[txid.copy(), rid.copy()]),
            expression=exp.Tuple(expressions=[at, _ph("id")]),
        ),
        exp.LT(this=txid.copy(), expression=horizon),
    )
    table = _table(cfg.table)
    q = (
        exp.select(
            exp.cast(txid.copy(), "text").as_("txid_text"),
            rid.copy(),
            exp.cast(_col(cfg.event_id_column), "text").as_("event_id_text"),
            exp.cast(_col(cfg.payload_column), "text").as_("payload_text"),
        )
        .from_(table)
        .where(where)
        .order_by(txid.copy(), rid.copy())
        .limit(_ph("n"))
    )
    return q.sql(dialect="postgres")


def sqlite_read_sql(cfg: OutboxSettings) -> str:
    rid = _col(cfg.id_column)
    q = (
        exp.select(rid.copy(), _col(cfg.event_id_column), _col(cfg.payload_column))
        .from_(_table(cfg.table))
        .where(exp.GT(this=rid.copy(), expression=_ph("id")))
        .order_by(rid.copy())
        .limit(_ph("n"))
    )
    return q.sql(dialect="sqlite")


class PostgresOutbox:
    """Reads by transaction id under the snapshot horizon (see the module docstring)."""

    kind = "postgres"

    def __init__(self, dsn: str, cfg: OutboxSettings) -> None:
        import psycopg

        self._sql = postgres_read_sql(cfg)
        # autocommit: the relay's reads take no transaction id, so they never hold the
        # horizon back themselves.
        self._conn = psycopg.connect(dsn, autocommit=True)

    def read(self, after: Position, limit: int) -> list[Row]:
        cur = self._conn.execute(self._sql, {"txid": str(after.txid), "id": after.id, "n": limit})
        return [
            Row(Position(int(t), int(i)), str(e), p.encode() if isinstance(p, str) else bytes(p))
            for t, i, e, p in cur.fetchall()
        ]

    def horizon(self) -> int | None:
        return self._snapshot("pg_snapshot_xmin")

    def frontier(self) -> int | None:
        return self._snapshot("pg_snapshot_xmax")

    def _snapshot(self, fn: str) -> int:
        q = exp.select(
            exp.cast(
                exp.Anonymous(this=fn, expressions=[exp.Anonymous(this="pg_current_snapshot")]),
                "text",
            )
        )
        row = self._conn.execute(q.sql(dialect="postgres")).fetchone()
        assert row is not None
        return int(row[0])

    def close(self) -> None:
        self._conn.close()


class SQLiteOutbox:
    """Reads by id: SQLite's single writer makes id order the commit order."""

    kind = "sqlite"

    def __init__(self, path: str, cfg: OutboxSettings) -> None:
        self._sql = sqlite_read_sql(cfg)
        self._conn = sqlite3.connect(path, timeout=30, isolation_level=None)
        self._conn.execute("PRAGMA busy_timeout=30000")

    def read(self, after: Position, limit: int) -> list[Row]:
        rows = self._conn.execute(self._sql, {"id": after.id, "n": limit}).fetchall()
        return [
            Row(Position(0, int(i)), str(e), p.encode() if isinstance(p, str) else bytes(p))
            for i, e, p in rows
        ]

    def horizon(self) -> int | None:
        return None

    def frontier(self) -> int | None:
        return None

    def close(self) -> None:
        self._conn.close()


def mysql_read_sql(cfg: OutboxSettings) -> str:
    """Rows past the position and at or below the final mark, in id order."""
    rid = _col(cfg.id_column)
    q = (
        exp.select(
            rid.copy(),
            exp.cast(_col(cfg.event_id_column), "char").as_("event_id_text"),
            exp.cast(_col(cfg.payload_column), "char").as_("payload_text"),
        )
        .from_(_table(cfg.table))
        .where(
            exp.and_(
                exp.GT(this=rid.copy(), expression=_ph("id")),
                exp.LTE(this=rid.copy(), expression=_ph("mark")),
            )
        )
        .order_by(rid.copy())
        .limit(_ph("n"))
    )
    return q.sql(dialect="mysql")


def mysql_mark_sql(cfg: OutboxSettings) -> str:
    """``(NOW(6), MAX(id))`` in one statement: the ids seen, and a time they all preceded."""
    q = exp.select(
        exp.Anonymous(this="NOW", expressions=[exp.Literal.number(6)]),
        exp.Coalesce(this=exp.Max(this=_col(cfg.id_column)), expressions=[exp.Literal.number(0)]),
    ).from_(_table(cfg.table))
    return q.sql(dialect="mysql")


MYSQL_OLDEST_SQL = (
    "SELECT NOW(6), MIN(trx_started) FROM information_schema.INNODB_TRX "
    "WHERE trx_mysql_thread_id <> CONNECTION_ID()"
)
"""The start of the oldest transaction still running, other than the relay's own."""

MYSQL_TRX_CACHE_S = timedelta(seconds=0.5)
"""``INNODB_TRX`` is served from a cache InnoDB refreshes at most every 0.1 s: a mark only
settles when the list was read this long after it, so a transaction that started just before
the mark cannot be missing from a stale copy."""


def mysql_connect_args(url: str) -> dict[str, Any]:
    """``mysql://user:password@host:port/database`` (or ``mysql+pymysql://``) as PyMySQL
    keyword arguments."""
    from urllib.parse import unquote, urlsplit

    u = urlsplit(url)
    if not u.path.strip("/"):
        raise ValueError("a MySQL outbox URL names its database: mysql://user@host:3306/db")
    return {
        "host": u.hostname or "127.0.0.1",
        "port": u.port or 3306,
        "user": unquote(u.username or "root"),
        "password": unquote(u.password or ""),
        "database": unquote(u.path.strip("/")),
    }


class MySQLOutbox:
    """Reads by id below a mark no transaction can still fill (see the module docstring)."""

    kind = "mysql"
    _KEEP = 10_000  # marks waiting to settle (one per read: hours of idle polling)

    def __init__(self, url: str, cfg: OutboxSettings) -> None:
        try:
            import pymysql  # type: ignore[import-untyped]
        except ImportError:
            raise ImportError(
                "a MySQL/MariaDB outbox needs PyMySQL: pip install 'gristmill[mysql]'"
            ) from None

        # PyMySQL binds ``%(name)s``; sqlglot writes placeholders as ``:name``.
        self._read_sql = re.sub(r":([a-z]+)\b", r"%(\1)s", mysql_read_sql(cfg))
        self._mark_sql = mysql_mark_sql(cfg)
        # autocommit: every statement sees what committed before it, and the relay itself
        # holds no transaction open (it would hold its own mark back).
        self._conn = pymysql.connect(**mysql_connect_args(url), autocommit=True, charset="utf8mb4")
        with self._conn.cursor() as cur:
            cur.execute("SET time_zone = 'SYSTEM'")  # NOW() in INNODB_TRX's clock
        self._pending: deque[tuple[datetime, int]] = deque(maxlen=self._KEEP)
        self._final = 0

    def settle(self) -> int:
        """The largest id up to which every row is final (it only ever grows)."""
        with self._conn.cursor() as cur:
            cur.execute(self._mark_sql)
            at, top = cur.fetchone()
            self._pending.append((at, int(top)))
            cur.execute(MYSQL_OLDEST_SQL)
            seen, oldest = cur.fetchone()
        # ``oldest`` has whole seconds: a start shown after ``at`` really was after it.
        while (
            self._pending
            and self._pending[0][0] < seen - MYSQL_TRX_CACHE_S
            and (oldest is None or self._pending[0][0] < oldest)
        ):
            self._final = max(self._final, self._pending.popleft()[1])
        return self._final

    def read(self, after: Position, limit: int) -> list[Row]:
        mark = self.settle()
        if mark <= after.id:
            return []
        with self._conn.cursor() as cur:
            cur.execute(self._read_sql, {"id": after.id, "mark": mark, "n": limit})
            rows = cur.fetchall()
        return [
            Row(Position(0, int(i)), str(e), p.encode() if isinstance(p, str) else bytes(p))
            for i, e, p in rows
        ]

    def horizon(self) -> int | None:
        """The final mark, an id (``until_idle`` waits for it to reach :meth:`frontier`)."""
        return self.settle()

    def frontier(self) -> int | None:
        """The largest id now: every row committed before this call is at or below it."""
        with self._conn.cursor() as cur:
            cur.execute(self._mark_sql)
            return int(cur.fetchone()[1])

    def close(self) -> None:
        self._conn.close()


def open_outbox(cfg: OutboxSettings) -> Outbox:
    if cfg.url is None:
        raise ValueError(
            "no outbox database: set GRISTMILL_RELAY__OUTBOX__URL (sqlite:///app.db, "
            "mysql://user:password@host:3306/db or a PostgreSQL DSN) or pass --url"
        )
    url = cfg.url.get_secret_value()
    if url.startswith(("mysql:", "mysql+pymysql:", "mariadb:")):
        return MySQLOutbox(url, cfg)
    if url.startswith("sqlite:"):
        # SQLAlchemy's spelling: sqlite:///relative.db, sqlite:////absolute.db
        path = url.removeprefix("sqlite:").removeprefix("///")
        return SQLiteOutbox(path, cfg)
    return PostgresOutbox(url, cfg)
