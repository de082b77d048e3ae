"""Filters over a column holding NULLs answer the same on DuckDB and ClickHouse (chdb).

ClickHouse has its own NULL rules (``transform_null_in``, non-Nullable defaults), so whether a
``not_in`` filter drops NULL rows as standard SQL does is pinned here, not assumed."""

from __future__ import annotations

import duckdb
import pytest

from gristmill.metrics.compile import condition
from gristmill.metrics.model import Condition

ROWS = [("a",), ("b",), (None,), ("c",)]

CASES = [
    (Condition("x", "not_in", ("a", "b")), 1),  # only "c": NULL is neither kept nor counted
    (Condition("x", "in", ("a", "c")), 2),
    (Condition("x", "is_null", None), 1),
]


def _duckdb_count(where: str) -> int:
    con = duckdb.connect()
    con.execute("CREATE TABLE t (x VARCHAR)")
    con.executemany("INSERT INTO t VALUES (?)", ROWS)
    row = con.execute(f"SELECT count(*) FROM t WHERE {where}").fetchone()
    assert row is not None
    return int(row[0])


def _chdb_count(where: str) -> int:
    chdb = pytest.importorskip("chdb")
    values = ", ".join("(NULL)" if v is None else f"('{v}')" for (v,) in ROWS)
    sql = (
        f"SELECT count() FROM (SELECT x FROM values('x Nullable(String)', {values})) WHERE {where}"
    )
    return int(str(chdb.query(sql, "CSV")).strip())


@pytest.mark.clickhouse
@pytest.mark.parametrize(("cond", "expected"), CASES, ids=lambda c: getattr(c, "op", str(c)))
def test_filters_over_nulls_agree(cond: Condition, expected: int) -> None:
    expr = condition(cond, None)
    assert _duckdb_count(expr.sql("duckdb")) == expected
    assert _chdb_count(expr.sql("clickhouse")) == expected
