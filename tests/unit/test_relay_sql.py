"""The relay's reading SQL per dialect, from a mapping onto an existing table."""

from __future__ import annotations

import pytest

from gristmill.config import OutboxSettings
from gristmill.relay.outbox import Position, open_outbox, postgres_read_sql, sqlite_read_sql
from gristmill.relay.progress import marker_key

MAPPED = OutboxSettings(
    table="app.domain_events",
    id_column="seq",
    event_id_column="uuid",
    payload_column="body",
    txid_column="written_by",
)


def test_postgres_reads_by_transaction_under_the_horizon() -> None:
    assert postgres_read_sql(MAPPED) == (
        'SELECT CAST("written_by" AS TEXT) AS txid_text, "seq", CAST("uuid" AS TEXT) AS '
        'event_id_text, CAST("body" AS TEXT) AS payload_text FROM "app"."domain_events" '
        'WHERE ("written_by", "seq") > (CAST(%(txid)s AS xid8), %(id)s) AND "written_by" < '
        "(SELECT PG_SNAPSHOT_XMIN(PG_CURRENT_SNAPSHOT())) "
        'ORDER BY "written_by", "seq" LIMIT %(n)s'
    )


def test_sqlite_reads_by_id() -> None:
    assert sqlite_read_sql(MAPPED) == (
        'SELECT "seq", "uuid", "body" FROM "app"."domain_events" WHERE "seq" > :id '
        'ORDER BY "seq" LIMIT :n'
    )


@pytest.mark.parametrize(
    "bad",
    [
        {"table": "x; DROP TABLE y"},
        {"table": "a.b.c"},
        {"id_column": 'id"--'},
        {"payload_column": "payload) OR (1=1"},
    ],
)
def test_identifiers_outside_the_pattern_are_refused(bad: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="outbox"):
        postgres_read_sql(OutboxSettings(**bad))


def test_no_url_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="GRISTMILL_RELAY__OUTBOX__URL"):
        open_outbox(OutboxSettings())


def test_seed_marker_format_and_position_order() -> None:
    assert marker_key("pf:evt", "analytics", "e-1") == "pf:evt:processed:analytics:e-1"
    assert Position(9999, 5) < Position(10000, 1) < Position(10000, 2)
    assert Position.of(Position(7, 3).as_dict()) == Position(7, 3)
