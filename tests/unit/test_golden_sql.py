"""BigQuery, Snowflake and Redshift cannot run here: every statement Gristmill would send them
for the marketplace pack is pinned as a golden file per dialect and parsed back with sqlglot's own
dialect. Regenerate after an intended change with::

    GRISTMILL_UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/test_golden_sql.py
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import sqlglot

from gristmill.config import Settings
from gristmill.pack.loader import load_pack
from tests.conftest import PACKS
from tests.golden.queries import statements

GOLDEN = Path(__file__).parent.parent / "golden"
DIALECTS = ("bigquery", "snowflake", "redshift")
UPDATE = os.environ.get("GRISTMILL_UPDATE_GOLDEN") == "1"


def _texts(dialect: str) -> dict[str, str]:
    pack = load_pack(PACKS / "marketplace")
    return {name: sql + ";\n" for name, sql in statements(pack, dialect, Settings())}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_golden_files_are_current(dialect: str) -> None:
    texts = _texts(dialect)
    folder = GOLDEN / dialect
    if UPDATE:
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.sql"):
            old.unlink()
        for name, text in texts.items():
            (folder / f"{name}.sql").write_text(text)
    on_disk = {p.stem: p.read_text() for p in folder.glob("*.sql")}
    assert sorted(on_disk) == sorted(texts), "golden files differ: GRISTMILL_UPDATE_GOLDEN=1"
    for name, text in texts.items():
        assert on_disk[name] == text, f"{dialect}/{name}.sql changed: GRISTMILL_UPDATE_GOLDEN=1"


@pytest.mark.parametrize("dialect", DIALECTS)
def test_every_golden_statement_parses_in_its_dialect(dialect: str) -> None:
    files = sorted((GOLDEN / dialect).glob("*.sql"))
    assert len(files) > 30
    count = 0
    for f in files:
        for stmt in f.read_text().split(";\n"):
            if stmt.strip():
                sqlglot.parse_one(stmt, read=dialect, error_level=sqlglot.ErrorLevel.RAISE)
                count += 1
    assert count > 60


def test_no_construct_either_engine_lacks() -> None:
    """FILTER clauses, AT TIME ZONE and DuckDB list functions must not reach the cloud
    dialects; BigQuery has no ordered-set PERCENTILE_CONT and Snowflake names are quoted."""
    for dialect in DIALECTS:
        for name, text in _texts(dialect).items():
            assert " FILTER(" not in text.upper(), (dialect, name)
            assert "AT TIME ZONE" not in text.upper(), (dialect, name)
            assert not re.search(r"\b(list_distinct|flatten|quantile_cont)\(", text, re.I)
    bq = _texts("bigquery")
    assert "WITHIN GROUP" not in "".join(bq.values())
    assert (
        "PERCENTILE_CONT(_gm_v, 0.5) OVER () FROM UNNEST(ARRAY_AGG(IF("
        in bq["metric_median_order_cents"]
    )
    assert "PARTITION BY DATE(`occurred_at`)" in bq["ddl"]
    # Local hours in a +05:30 zone: not TIMESTAMP_TRUNC(…, HOUR, tz), which truncates in UTC.
    assert "TIMESTAMP_TRUNC" not in bq["marketplace_events_hour_kolkata"]
    assert (
        "DATETIME_TRUNC(DATETIME(`occurred_at`, @p0), HOUR)"
        in bq["marketplace_events_hour_kolkata"]
    )
    assert "CLUSTER BY `vendor_store_id`, `store_id`, `event_type`" in bq["ddl"]
    # Rollups prune by their bucket's day too.
    assert (
        "`ad_spend_cents__sum` NUMERIC) PARTITION BY DATE(`bucket`) "
        "CLUSTER BY `vendor_store_id`, `campaign_id`, `placement`"
    ) in bq["ddl"]
    sf = _texts("snowflake")
    assert 'CLUSTER BY ("vendor_store_id", "store_id", "event_type")' in sf["ddl"]
    assert "ARRAY_UNION_AGG" in sf["metric_buyers"]


def test_redshift_texts_use_what_redshift_has() -> None:
    """Redshift has no FILTER clause, no array aggregate and no DELETE alias; tables are
    sorted by time then the clustering keys and distributed by the first of them."""
    rs = _texts("redshift")
    for name, text in rs.items():
        assert " FILTER(" not in text.upper(), name
        assert not re.search(r"\b(ARRAY_AGG|list_distinct|quantile_cont)\(", text, re.I), name
        assert not re.search(r'DELETE FROM "[^"]+"\."[^"]+" AS ', text), name
        assert "DISTINCT FROM" not in text.upper(), name
        assert not re.search(r"MERGE INTO \S+ AS |USING \(", text), name
    assert (
        'DISTKEY("vendor_store_id") COMPOUND SORTKEY("occurred_at", "vendor_store_id", '
        '"store_id", "event_type")'
    ) in rs["ddl"]
    assert '"properties" SUPER' in rs["ddl"]
    assert 'JSON_PARSE("properties")' in rs["load_marketplace_events"]
    assert re.search(r'JSON_PARSE\("(s"\.")?errors"\)', rs["system"])  # quarantine JSON as SUPER
    assert "COUNT(DISTINCT CASE WHEN" in rs["metric_buyers"]
    assert (
        "PERCENTILE_CONT(0.5) WITHIN GROUP (ORDER BY CASE WHEN" in rs["metric_median_order_cents"]
    )
    assert "CONVERT_TIMEZONE(%(p0)s" in rs["marketplace_events_hour_kolkata"]
