"""A scratch PostgreSQL database per test: the warehouse's schemas (``_gristmill``, one per
pack) are fixed names, so isolation is by database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

ADMIN_DSN = "host=127.0.0.1 dbname=postgres user=postgres"


@contextmanager
def scratch_database() -> Iterator[str]:
    name = f"gm_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"host=127.0.0.1 dbname={name} user=postgres"
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
