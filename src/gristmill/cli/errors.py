"""Errors that escape a command, as one line saying what to do, and an exit code.

Known errors are matched by ``(top-level package, class name)`` along the exception's MRO (and
its causes), so this module imports none of the drivers it knows about: an error from DuckDB
can only reach here if DuckDB was already imported. Exit code 2 means the input was wrong
(settings, a pack, an argument); 1 means the environment was (a service down, a lock held).
Anything unknown is still one line: its type and first line, and where the traceback is.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Iterator

DEBUG_HINT = "rerun with --debug (or GRISTMILL_DEBUG=1) for the traceback"

Explain = Callable[[BaseException], tuple[str, int] | None]


def first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def _names(exc: BaseException) -> set[tuple[str, str]]:
    return {(c.__module__.split(".")[0].lstrip("_"), c.__name__) for c in type(exc).__mro__}


def _settings(exc: BaseException) -> tuple[str, int]:
    errors = getattr(exc, "errors", None)
    title = getattr(exc, "title", "")
    if not callable(errors):
        return f"invalid settings: {first_line(exc)}", 2
    parts = []
    for e in errors()[:3]:
        loc = [str(x) for x in e.get("loc", ()) if not str(x).isdigit()]
        where = ".".join(loc) or "value"
        env = "GRISTMILL_" + "__".join(loc).upper() if title == "Settings" and loc else ""
        parts.append(f"{where}: {e.get('msg', '')}" + (f" (set by {env} or a flag)" if env else ""))
    what = "settings" if title == "Settings" else (title or "input")
    return f"invalid {what}: " + "; ".join(parts), 2


def _duckdb_io(exc: BaseException) -> tuple[str, int] | None:
    text = first_line(exc)
    if "lock" not in text.lower():
        return None
    m = re.search(r'on file "([^"]+)"', text)
    pid = re.search(r"\(PID (\d+)\)", text)
    where = m.group(1) if m else "the warehouse file"
    who = f"process {pid.group(1)}" if pid else "another process"
    return (
        f"{where} is locked by {who} (a running `gristmill serve`?): stop it, or use another "
        "--data-dir; read-only commands ask a running server when server.json points to it",
        1,
    )


def _unreachable(what: str) -> Callable[[BaseException], tuple[str, int]]:
    def explain(exc: BaseException) -> tuple[str, int]:
        return (
            f"cannot reach {what} ({first_line(exc)}): start it, or fix its URL in the "
            "settings (GRISTMILL_LOG__URL, GRISTMILL_WAREHOUSE__DSN, GRISTMILL_OUTBOX__URL, ...)",
            1,
        )

    return explain


_CONNECT_WORDS = (
    "connect",
    "refused",
    "timed out",
    "timeout",
    "unable to open",
    "resolve",
    "host",
    "access denied",
    "authentication",
)


def _database(what: str) -> Explain:
    """A database driver's OperationalError: unreachable when it says so, else its line."""

    def explain(exc: BaseException) -> tuple[str, int]:
        text = first_line(exc)
        if any(w in text.lower() for w in _CONNECT_WORDS):
            return _unreachable(what)(exc)
        return f"{what} error: {text} ({DEBUG_HINT})", 1

    return explain


def _os_error(exc: BaseException) -> tuple[str, int] | None:
    if not isinstance(exc, OSError):
        return None
    if exc.errno == errno.EADDRINUSE:
        return f"the address is already in use ({first_line(exc)}): pick another --port", 1
    if isinstance(exc, ConnectionError) or exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH):
        return f"cannot reach a service ({first_line(exc)}): start it, or fix its URL", 1
    if isinstance(exc, FileNotFoundError):
        name = exc.filename or first_line(exc)
        return f"{name}: no such file or directory", 2
    if isinstance(exc, PermissionError):
        return f"{exc.filename or first_line(exc)}: permission denied", 1
    return None


KNOWN: tuple[tuple[tuple[str, str], Explain], ...] = (
    (("gristmill", "ConfigError"), lambda e: (first_line(e), 2)),
    (("gristmill", "Problem"), lambda e: (first_line(e), 1)),
    (("pydantic_core", "ValidationError"), _settings),
    (("duckdb", "IOException"), _duckdb_io),
    (("httpx", "TransportError"), _unreachable("the gristmill server")),
    (("psycopg", "OperationalError"), _database("PostgreSQL")),
    (("sqlalchemy", "OperationalError"), _database("the database")),
    (("pymysql", "OperationalError"), _database("MySQL/MariaDB")),
    (("nats", "NoServersError"), _unreachable("NATS")),
    (("aiormq", "AMQPConnectionError"), _unreachable("RabbitMQ")),
    (("redis", "ConnectionError"), _unreachable("Redis")),
    (("builtins", "TimeoutError"), lambda e: (f"timed out: {first_line(e)}", 1)),
    (("builtins", "OSError"), _os_error),
)


def explain(exc: BaseException) -> tuple[str, int]:
    """``(one line, exit code)`` for an error that escaped a command."""
    for link in _chain(exc):
        names = _names(link)
        for key, fn in KNOWN:
            if key in names and (found := fn(link)) is not None:
                return found
    return f"{type(exc).__name__}: {first_line(exc)} ({DEBUG_HINT})", 1
