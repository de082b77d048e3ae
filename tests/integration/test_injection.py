"""An injection corpus in every identifier and filter field: rejected with 4xx (identifiers)
or bound as a value (filter values), and no corpus string ever appears in SQL text."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.integration.analytics_fixtures import Loaded

CORPUS = [
    "orders') OR 1=1 --",
    "x' OR '1'='1",
    "gmv_cents; DROP TABLE marketplace.marketplace_events; --",
    "vendor_store_id/**/OR/**/1=1",
    '"vendor_store_id" OR "x"="x"',
    "ｏｒｄｅｒｓ",  # noqa: RUF001 - fullwidth letters on purpose
    "orders\u0000",
    "orders UNION SELECT * FROM _gristmill.quarantine",
    "é' || (SELECT 1) || '",
    "${jndi:ldap://x}",
]


@pytest.fixture
def sql_seen(loaded: Loaded) -> Iterator[list[str]]:
    seen: list[str] = []
    wh = loaded.rt.warehouse
    real, real_sql = wh.query, wh.query_sql

    def spy(query: Any, params: Any = None) -> Any:
        seen.append(query.sql(wh.dialect))
        return real(query, params)

    def spy_sql(sql: str, params: Any = None) -> Any:
        seen.append(sql)
        return real_sql(sql, params)

    wh.query, wh.query_sql = spy, spy_sql  # type: ignore[method-assign]
    yield seen
    wh.query, wh.query_sql = real, real_sql  # type: ignore[method-assign]


def q(s: str) -> str:
    return quote(s, safe="")


@pytest.mark.parametrize("bad", CORPUS)
@pytest.mark.parametrize(
    "template",
    [
        "/v1/metrics?metrics={bad}&preset=7d",
        "/v1/metrics?metrics=orders&preset=7d&group_by={bad}",
        "/v1/metrics?metrics=orders&preset=7d&filter={bad}:eq:x",
        "/v1/metrics?metrics=orders&preset=7d&filter=vendor_store_id:{bad}:x",
        "/v1/metrics?metrics=orders&preset=7d&tz={bad}",
        "/v1/metrics?metrics=orders&preset={bad}",
        "/v1/metrics?metrics=orders&preset=7d&grain={bad}",
        "/v1/metrics?metrics=orders&preset=7d&pack={bad}",
        "/v1/events?event_types={bad}",
        "/v1/events?cursor={bad}",
        "/api/v1/admin/analytics?preset={bad}",
        "/api/v1/admin/analytics?preset=7d&tz={bad}",
    ],
)
def test_identifiers_are_rejected(
    loaded: Loaded, sql_seen: list[str], template: str, bad: str
) -> None:
    r = loaded.get("admin", template.format(bad=q(bad)))
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert r.headers["content-type"] == "application/problem+json"
    assert not any(bad in sql for sql in sql_seen)


@pytest.mark.parametrize("bad", CORPUS)
def test_filter_values_are_bound_not_spliced(loaded: Loaded, sql_seen: list[str], bad: str) -> None:
    r = loaded.get(
        "admin", f"/v1/metrics?metrics=orders&preset=7d&filter=vendor_store_id:eq:{q(bad)}"
    )
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == [{"orders": 0}]
    assert sql_seen
    assert not any(bad in sql for sql in sql_seen)
    # A scoped caller naming any other value gets 404, injection or not.
    assert (
        loaded.get(
            "vendor_a", f"/v1/metrics?metrics=orders&preset=7d&filter=vendor_store_id:eq:{q(bad)}"
        ).status_code
        == 404
    )
