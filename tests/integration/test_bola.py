"""Object-level authorization: every view and data endpoint x every role x own / other /
nonexistent tenant. Zero bytes of another tenant's data; 401, 403 and 404 where they belong."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.integration.analytics_fixtures import Loaded
from tests.reference import marketplace_kpis, preset_start, select

OWN, OTHER, NONE = "vnd_000", "vnd_001", "vnd_999"
VENDOR_VIEW = "/api/v1/vendor/analytics?preset=30d"
ADMIN_VIEW = "/api/v1/admin/analytics?preset=30d"


def metrics_url(tenant: str | None) -> str:
    url = "/v1/metrics?metrics=orders,gmv_cents,buyers&preset=30d&group_by=vendor_store_id"
    return url + (f"&filter=vendor_store_id:eq:{tenant}" if tenant else "")


def events_url(tenant: str | None) -> str:
    url = "/v1/events?preset=90d&limit=1000"
    return url + (f"&filter=vendor_store_id:eq:{tenant}" if tenant else "")


# (who, url) -> expected status
MATRIX = [
    *[(who, VENDOR_VIEW, 200) for who in ("vendor_a", "vendor_none", "operator")],
    *[(who, VENDOR_VIEW, 403) for who in ("admin", "writer")],
    ("anonymous", VENDOR_VIEW, 401),
    *[(who, ADMIN_VIEW, 200) for who in ("admin", "operator")],
    *[(who, ADMIN_VIEW, 403) for who in ("vendor_a", "vendor_none", "writer")],
    ("anonymous", ADMIN_VIEW, 401),
    ("vendor_a", metrics_url(None), 200),
    ("vendor_a", metrics_url(OWN), 200),
    ("vendor_a", metrics_url(OTHER), 404),
    ("vendor_a", metrics_url(NONE), 404),
    ("vendor_none", metrics_url(NONE), 200),
    ("vendor_none", metrics_url(OWN), 404),
    ("admin", metrics_url(OTHER), 200),
    ("admin", metrics_url(NONE), 200),
    ("writer", metrics_url(None), 403),
    ("anonymous", metrics_url(None), 401),
    ("vendor_a", events_url(OWN), 200),
    ("vendor_a", events_url(OTHER), 404),
    ("vendor_a", events_url(NONE), 404),
    ("admin", events_url(NONE), 200),
    ("writer", events_url(None), 403),
    ("vendor_a", "/v1/freshness", 200),
    ("writer", "/v1/freshness", 403),
]


@pytest.mark.parametrize(("who", "url", "status"), MATRIX)
def test_status_matrix(loaded: Loaded, who: str, url: str, status: int) -> None:
    r = loaded.get(who, url)
    assert r.status_code == status, r.text
    if status >= 400:
        assert r.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "url",
    [
        VENDOR_VIEW,
        metrics_url(None),
        metrics_url(OWN),
        "/v1/events?preset=90d&limit=1000",
        "/v1/freshness",
    ],
)
def test_vendor_sees_zero_bytes_of_other_tenants(loaded: Loaded, url: str) -> None:
    text = loaded.get("vendor_a", url).text
    others = {e["properties"]["vendor_store_id"] for e in loaded.events} - {OWN}
    assert others
    for vendor in others:
        assert vendor not in text
    # and no buyer/order of another vendor either
    foreign_orders = {
        e["properties"].get("order_id")
        for e in loaded.events
        if e["properties"]["vendor_store_id"] != OWN
    } - {None}
    assert not any(f'"{o}"' in text for o in foreign_orders)


def test_vendor_numbers_are_their_own(loaded: Loaded) -> None:
    body = loaded.get("vendor_a", metrics_url(None)).json()
    assert [r["vendor_store_id"] for r in body["rows"]] == [OWN]
    now = datetime.now(UTC)
    ref = marketplace_kpis(
        select(loaded.events, start=preset_start(30, "UTC", now), end=now, vendor=OWN)
    )
    assert body["rows"][0]["gmv_cents"] == ref["gmv_cents"]


def test_vendor_events_are_their_own_and_complete(loaded: Loaded) -> None:
    seen: list[dict[str, object]] = []
    url = "/v1/events?preset=90d&limit=500"
    while True:
        body = loaded.get("vendor_a", url).json()
        seen += body["events"]
        if not body["next_cursor"]:
            break
        url = f"/v1/events?preset=90d&limit=500&cursor={body['next_cursor']}"
    assert {e["properties"]["vendor_store_id"] for e in seen} == {OWN}  # type: ignore[index]
    now = datetime.now(UTC)
    ref = select(loaded.events, start=preset_start(90, "UTC", now), end=now, vendor=OWN)
    assert len(seen) == body["total"] == len(ref)
    assert len({(e["source"], e["event_id"]) for e in seen}) == len(seen)


def test_admin_nonexistent_tenant_is_empty_not_error(loaded: Loaded) -> None:
    body = loaded.get("admin", metrics_url(NONE)).json()
    assert body["rows"] == []


def test_debug_needs_the_debug_permission(loaded: Loaded) -> None:
    assert loaded.get("vendor_a", VENDOR_VIEW + "&debug=true").status_code == 403
    assert "debug" in loaded.get("admin", ADMIN_VIEW + "&debug=true").json()


def test_secret_key_for_scoped_role_without_claim_gets_nothing(loaded: Loaded) -> None:
    token = loaded.rt.meta.create_key("secret", "x", pack="marketplace", role="vendor")[1]
    loaded.keys["vendor_noclaim"] = token
    assert loaded.get("vendor_noclaim", VENDOR_VIEW).status_code == 403
    assert loaded.get("vendor_noclaim", metrics_url(None)).status_code == 403
