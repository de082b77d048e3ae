"""Creating the metadata store's tables when several processes start on a fresh store at once.

``serve --workers`` starts its collect workers and its loader together, and a CLI command can
start while a server does: each opens the same SQLite file (or PostgreSQL database) and creates
what is missing. ``create_all`` checks, then creates, one table at a time and outside any
transaction, so two processes that check at the same moment both try to create the table and
one fails (``table … already exists`` on SQLite; a duplicate type or relation on PostgreSQL).
The loser's failure is harmless — the table now exists — so it looks again and creates only what
is still missing; a real error (bad permissions, a full disk) fails every attempt and is raised.
"""

from __future__ import annotations

import secrets
import time

import sqlalchemy as sa

ATTEMPTS = 5


def create_tables(metadata: sa.MetaData, engine: sa.Engine) -> None:
    """``metadata.create_all(engine)``, looking again after losing a creation race."""
    for attempt in range(ATTEMPTS):
        try:
            metadata.create_all(engine)
            return
        except sa.exc.DBAPIError:
            if attempt == ATTEMPTS - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


def get_or_make_secret(engine: sa.Engine, table: sa.Table, name: str) -> bytes:
    """The install secret ``name`` (``table``: name → value), made once; the first of several
    processes to write it wins and the others read its value, so all sign with one key."""
    with engine.begin() as c:
        row = c.execute(sa.select(table.c.value).where(table.c.name == name)).first()
        if row is not None:
            return bytes(row.value)
    try:
        with engine.begin() as c:
            c.execute(table.insert().values(name=name, value=secrets.token_bytes(32)))
    except sa.exc.IntegrityError:
        pass  # another process made it between our read and our write: use theirs
    with engine.begin() as c:
        return bytes(c.execute(sa.select(table.c.value).where(table.c.name == name)).scalar_one())
