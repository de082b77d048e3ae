"""What can be checked of Redshift's loading without a cluster:

* the tables and load statements Gristmill renders for Redshift, translated to DuckDB by
  sqlglot and run there: the ``MD5`` dedupe keys keep a re-delivered batch out and count
  fresh rows per source exactly, and JSON columns are parsed (``JSON_PARSE``), not strings;
* the small-batch path: the staging table and multi-row ``INSERT`` (with the connector's
  ``format`` parameters) put the Arrow batch in unchanged;
* the large-batch path: the Parquet file staged in an S3-compatible bucket (moto's server on
  127.0.0.1) holds the batch in the staging table's column order, which ``COPY`` relies on.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import duckdb
import pytest
import sqlglot
from pydantic import SecretStr
from sqlglot import exp

from gristmill.config import RedshiftSettings, RedshiftStagingSettings, S3Settings
from gristmill.pack.loader import load_pack
from gristmill.pack.models import Pack
from gristmill.warehouse.redshift import sql as rs
from gristmill.warehouse.redshift.staging import Staging, to_format, use_copy
from tests.conftest import PACKS
from tests.integration.warehouse_conformance import batch_of, envelope, frame

BUCKET = "gm-redshift-staging"


def _duck(text: str) -> str:
    """Redshift text as DuckDB runs it (SUPER has no DuckDB spelling: JSON)."""
    tree = sqlglot.parse_one(text, read="redshift")
    for dt in list(tree.find_all(exp.DataType)):
        if dt.is_type(exp.DataType.Type.SUPER):
            dt.replace(exp.DataType.build("JSON"))
        elif dt.is_type(exp.DataType.Type.VARBINARY, exp.DataType.Type.VARCHAR):
            dt.set("expressions", [])  # DuckDB's BLOB and VARCHAR take no length
    for prop in list(tree.find_all(exp.DistKeyProperty, exp.SortKeyProperty)):
        prop.pop()
    for prop in list(tree.find_all(exp.DistStyleProperty)):
        prop.pop()
    return tree.sql(dialect="duckdb")


@pytest.fixture
def pack() -> Pack:
    return load_pack(PACKS / "marketplace")


@pytest.fixture
def con(pack: Pack) -> Iterator[duckdb.DuckDBPyConnection]:
    c = duckdb.connect()
    for stmt in rs.pack_ddl([pack]):
        c.execute(_duck(rs.sql(stmt)))
    yield c
    c.close()


def _load(con: duckdb.DuckDBPyConnection, pack: Pack, *events: Any) -> dict[str, int]:
    batch = batch_of(pack, frame("web", *events))
    fresh: dict[str, int] = {}
    for rows in batch.tables:
        st = rs.LoadStatements.build(rows.pack, rows.table)
        con.register(rs.BATCH, rows.rows)
        for source, n in con.execute(_duck(rs.sql(st.count_fresh))).fetchall():
            fresh[str(source)] = fresh.get(str(source), 0) + int(n)
        con.execute(_duck(rs.sql(st.insert_fresh)))
        con.execute(_duck(rs.sql(st.remember)))
        con.unregister(rs.BATCH)
    return fresh


def test_dedupe_keys_keep_redelivered_events_out(
    con: duckdb.DuckDBPyConnection, pack: Pack
) -> None:
    first = [envelope(f"e{i}", amount=i) for i in range(5)]
    assert _load(con, pack, *first) == {"web": 5}
    assert _load(con, pack, *first) == {}  # the whole batch again: nothing fresh
    assert _load(con, pack, *first[3:], envelope("e9")) == {"web": 1}
    rows = con.execute(
        'SELECT event_id, properties->>\'$.amount_cents\' FROM "marketplace"."marketplace_events" '
        "ORDER BY event_id"
    ).fetchall()
    assert [r[0] for r in rows] == ["e0", "e1", "e2", "e3", "e4", "e9"]
    assert rows[2][1] == "2"  # JSON parsed into an object, not kept as a string
    keys = con.execute('SELECT k FROM "marketplace"."_gm_dedupe"').fetchall()
    assert len(keys) == 6
    assert all(len(k[0]) == 32 for k in keys)


def test_multi_row_insert_stages_the_batch_unchanged(
    con: duckdb.DuckDBPyConnection, pack: Pack
) -> None:
    batch = batch_of(pack, frame("web", *[envelope(f"m{i}", amount=i) for i in range(7)]))
    data = batch.tables[0].rows
    con.execute(_duck(rs.stage_table("_gm_batch_0", data.schema)))
    for start, length in rs.insert_chunks(data.num_rows, data.num_columns, max_params=40):
        part = data.slice(start, length)
        text, values = to_format(
            rs.insert_rows("_gm_batch_0", part.schema, part.num_rows), rs.insert_values(part)
        )
        assert len(values) == part.num_rows * part.num_columns
        con.execute(_duck(text), values)
    got = con.sql('SELECT * FROM "_gm_batch_0" ORDER BY event_id').to_arrow_table()
    assert got.num_rows == 7
    want = data.sort_by("event_id")
    for name in ("event_id", "amount_cents", "properties", "_dedupe_scope"):
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Settings]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    try:
        yield S3Settings(
            endpoint_url=url,
            key=SecretStr("testing"),
            secret=SecretStr("testing"),
            region="us-east-1",
        )
    finally:
        server.stop()


def test_copy_path_stages_parquet_in_column_order(s3: S3Settings, pack: Pack) -> None:
    cfg = RedshiftSettings(
        staging=RedshiftStagingSettings(bucket=BUCKET, iam_role="arn:aws:iam::1:role/rs", s3=s3),
        copy_min_rows=3,
    )
    batch = batch_of(pack, frame("web", *[envelope(f"c{i}") for i in range(4)]))
    data = batch.tables[0].rows
    assert use_copy(cfg, data.num_rows)
    assert not use_copy(cfg, 2)
    staging = Staging(BUCKET, s3)
    key = rs.staging_key(cfg.staging.prefix, batch.batch_id, 0)
    url = staging.put(key, data)
    copy = rs.copy_from_s3("_gm_batch_0", url, cfg.staging.iam_role)
    parsed = sqlglot.parse_one(copy, read="redshift")
    assert isinstance(parsed, exp.Copy)
    assert f"FROM '{url}'" in copy
    assert "IAM_ROLE 'arn:aws:iam::1:role/rs'" in copy
    back = staging.read(key)
    # COPY from Parquet matches columns by position: the file's order is the stage table's.
    stage = sqlglot.parse_one(rs.stage_table("_gm_batch_0", data.schema), read="redshift")
    assert back.column_names == [c.name for c in stage.this.expressions]
    assert back.column("event_id").to_pylist() == data.column("event_id").to_pylist()
    staging.delete(key)
    assert not staging.exists(key)


def test_without_a_bucket_every_batch_inserts() -> None:
    assert not use_copy(RedshiftSettings(copy_min_rows=1), 1_000_000)


def test_freshness_merge_from_a_temp_table_keeps_one_row_per_key(
    con: duckdb.DuckDBPyConnection, pack: Pack
) -> None:
    """Redshift's MERGE takes no subquery source and no target alias: the freshness upsert
    becomes a temporary table and a MERGE from it, still one row per key after two loads."""
    from gristmill.rollup.freshness import freshness_ddl
    from gristmill.rollup.scripted import freshness_refresh

    con.execute(_duck(rs.sql(freshness_ddl("redshift"))))
    step = freshness_refresh(pack, "marketplace_events", "redshift")
    for chunk in ([envelope("f1", vendor="v1"), envelope("f2", vendor="v2")], [envelope("f3")]):
        batch = batch_of(pack, frame("web", *chunk))
        con.register(rs.BATCH, batch.tables[0].rows)
        for stmt in step.statements:
            texts = rs.statements(stmt)
            assert len(texts) == 3  # drop, temporary table, MERGE from it
            assert ' AS "f"' not in texts[2]
            for text in texts:
                con.execute(_duck(text))
        con.unregister(rs.BATCH)
    rows = con.execute(
        'SELECT scope_column, scope_value FROM "_gristmill"."freshness" ORDER BY 1, 2'
    ).fetchall()
    assert rows == [("*", "*"), ("vendor_store_id", "v1"), ("vendor_store_id", "v2")]


def _load_as_the_client(
    con: duckdb.DuckDBPyConnection, pack: Pack, after: tuple[Any, ...], *events: Any
) -> None:
    """A batch in the Redshift client's order: count and insert the fresh rows, the
    ``before_keys`` steps (``_gm_new`` bound to the anti-join), remember the keys, the rest;
    every statement as :func:`rs.statements` splits it (a MERGE from a temporary table)."""
    batch = batch_of(pack, frame("web", *events))
    rows = batch.tables[0]
    st = rs.LoadStatements.build(rows.pack, rows.table)
    con.register(rs.BATCH, rows.rows)

    def run(step: Any) -> None:
        params: dict[str, Any] = {}
        if step.bounds is not None:
            got = con.execute(_duck(rs.sql(step.bounds))).fetchone()
            params = dict(zip(("lo", "hi"), got or (None, None), strict=True))
            if all(v is None for v in params.values()):
                return
        for stmt in (*step.prepare, *step.statements):
            for text in rs.statements(stmt):
                con.execute(_duck(text), params if "%(" in text else None)

    con.execute(_duck(rs.sql(st.count_fresh))).fetchall()
    con.execute(_duck(rs.sql(st.insert_fresh)))
    early, late = st.split(after)
    for step in early:
        run(step)
    con.execute(_duck(rs.sql(st.remember)))
    for step in late:
        run(step)
    con.unregister(rs.BATCH)


@pytest.mark.parametrize("mode", ["auto", "recompute"])
def test_rollup_maintenance_equals_a_rebuild(
    con: duckdb.DuckDBPyConnection, pack: Pack, mode: str
) -> None:
    """The rollup step Redshift runs in each load — by default the delta MERGE (from a
    temporary table, no target alias, NULL-safe key matches spelled out), with ``recompute``
    the DELETE without an alias and INSERT — translated to DuckDB and run in the client's
    order: after late and repeated events the rollup equals a rebuild from all rows (sets stay
    NULL), and freshness keeps one row per key."""
    import random

    from gristmill.core.clock import from_datetime
    from gristmill.rollup.maintain import _after_insert_by_merge, analytics_ddl
    from gristmill.rollup.spec import full_rebuild, rollup_table
    from gristmill.warehouse.registry import capabilities
    from tests.golden.queries import NOW

    for stmt in analytics_ddl([pack], "redshift", capabilities("redshift")):
        con.execute(_duck(rs.sql(rs.sort_rollup(stmt))))
    name, spec = "marketplace_hourly", pack.spec.rollups["marketplace_hourly"]
    after = _after_insert_by_merge({pack.name: pack}, "redshift", mode)
    steps = after[(pack.name, spec.table)]
    assert steps[0].before_keys == (mode != "recompute")
    rnd = random.Random(7)
    events = []
    for i in range(120):
        e = envelope(f"r{i}", rnd.randint(1, 5000), rnd.choice(["order_created", "order_paid"]))
        e.occurred_at = from_datetime(NOW - timedelta(hours=rnd.uniform(0, 72)))
        e.promoted = [f"o{i}", "s1", rnd.choice(["v1", "v2", None]), e.promoted[3]]
        events.append(e)
    for chunk in (events[:70], events[70:], events[5:30]):  # late, then repeats
        _load_as_the_client(con, pack, steps, *chunk)
    keys = con.execute('SELECT count(*) FROM "marketplace"."_gm_dedupe"').fetchone()
    assert keys == (120,)
    whole = con.execute(
        """SELECT count(*) FROM "_gristmill"."freshness" WHERE scope_column = '*' """
    ).fetchone()
    assert whole == (1,)

    def rows() -> list[tuple[object, ...]]:
        table = rollup_table(pack, name).sql("duckdb")
        return sorted(con.execute(f"SELECT * FROM {table}").fetchall(), key=repr)

    incremental = rows()
    assert len(incremental) > 50
    assert all(r[-2] is None for r in incremental)  # buyers__set: no sets on Redshift
    for stmt in full_rebuild(pack, name, spec, "redshift"):
        con.execute(_duck(rs.sql(stmt)))
    assert rows() == incremental
