"""POST /v1/events end to end through the ASGI app: statuses, per-item reasons, counting."""

from __future__ import annotations

import gzip
import json
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlglot import exp

from gristmill.runtime import Runtime
from gristmill.sql.ddl import table_ref
from tests.factories import ad, order


def post(client: TestClient, key: str, body: Any, **headers: str) -> Any:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return client.post(
        "/v1/events", content=data, headers={"Authorization": f"Bearer {key}", **headers}
    )


def count(rt: Runtime, table: str = "marketplace_events") -> int:
    q = exp.select(exp.func("count", exp.Star()).as_("n")).from_(table_ref("marketplace", table))
    return int(rt.warehouse.query(q).to_pylist()[0]["n"])


def test_all_accepted_is_200_and_loads(
    client: TestClient, runtime: Runtime, write_key: str
) -> None:
    r = post(client, write_key, [order(), order("order_paid"), ad()])
    assert r.status_code == 200
    body = r.json()
    assert body["accepted"] == 3
    assert body["rejected"] == 0
    assert [i["status"] for i in body["results"]] == ["accepted"] * 3
    runtime.loader.drain()
    assert count(runtime) == 2
    assert count(runtime, "ad_events") == 1


def test_mixed_batch_is_207_with_a_reason_per_item(
    client: TestClient, runtime: Runtime, write_key: str
) -> None:
    bad_type = order()
    bad_type["properties"]["amount_cents"] = "12.50"
    missing = order()
    del missing["occurred_at"]
    unknown = order("order_refunded")
    r = post(client, write_key, [order(), bad_type, missing, unknown])
    assert r.status_code == 207
    res = r.json()["results"]
    assert [x["status"] for x in res] == ["accepted", "rejected", "rejected", "rejected"]
    assert res[1]["reason"] == "schema_violation"
    assert res[1]["errors"][0]["path"] == "/properties/amount_cents"
    assert res[2]["reason"] == "invalid_envelope"
    assert "occurred_at" in res[2]["detail"]
    assert res[3]["reason"] == "unknown_event_type"
    runtime.loader.drain()
    c = runtime.conservation()
    assert c.balanced
    assert (c.total("loaded"), c.total("quarantined")) == (1, 3)


def test_all_rejected_is_422_problem(client: TestClient, runtime: Runtime, write_key: str) -> None:
    r = post(client, write_key, [order(schema_version=9)])
    assert r.status_code == 422
    assert r.headers["content-type"] == "application/problem+json"
    p = r.json()
    assert p["type"].endswith("/events-rejected")
    assert p["errors"][0]["reason"] == "unknown_schema_version"


def test_ndjson_and_gzip(client: TestClient, runtime: Runtime, write_key: str) -> None:
    nd = b"\n".join(orjson.dumps(e) for e in [order(), order()])
    r = post(
        client,
        write_key,
        gzip.compress(nd),
        **{"Content-Encoding": "gzip", "Content-Type": "application/x-ndjson"},
    )
    assert r.status_code == 200
    assert r.json()["accepted"] == 2


@pytest.mark.parametrize(
    ("body", "headers", "slug"),
    [
        (b"{not json", {}, "events-rejected"),
        (b'[{"event_id": "a"}, ', {}, "undecodable-body"),
        (b"\x1f\x8bgarbage", {}, "undecodable-body"),
        (b"not gzip", {"Content-Encoding": "gzip"}, "undecodable-body"),
        (b"", {}, "empty-body"),
        (b"[1, 2]", {}, "events-rejected"),
    ],
)
def test_malformed_bodies_are_4xx_and_kept(
    client: TestClient,
    runtime: Runtime,
    write_key: str,
    body: bytes,
    headers: dict[str, str],
    slug: str,
) -> None:
    r = post(client, write_key, body, **headers)
    assert 400 <= r.status_code < 500
    assert r.json()["type"].endswith("/" + slug)
    runtime.loader.drain()
    c = runtime.conservation()
    assert c.balanced
    if body:
        # Every non-empty body's bytes are in quarantine.
        assert c.total("quarantined") >= 1
        assert c.total("received") == c.total("quarantined")


def test_oversize_event_is_rejected_alone(
    client: TestClient, runtime: Runtime, write_key: str
) -> None:
    limit = runtime.settings.limits.max_event_bytes
    big = order()
    big["context"] = {"pad": "x" * limit}
    r = post(client, write_key, [order(), big])
    assert r.status_code == 207
    assert r.json()["results"][1]["reason"] == "oversize"


def test_event_size_boundary_is_exact(client: TestClient, runtime: Runtime, write_key: str) -> None:
    limit = runtime.settings.limits.max_event_bytes
    ev = order()
    ev["context"] = {"pad": ""}
    base = len(orjson.dumps(ev))
    ev["context"]["pad"] = "x" * (limit - base)
    at_limit = orjson.dumps(ev)
    assert len(at_limit) == limit
    assert post(client, write_key, b"[" + at_limit + b"]").status_code == 200
    ev["context"]["pad"] += "x"
    over = orjson.dumps(ev)
    assert len(over) == limit + 1
    r = post(client, write_key, b"[" + over + b"]")
    assert r.status_code == 422
    assert r.json()["errors"][0]["reason"] == "oversize"


def test_oversize_body_is_413_with_the_limit(
    client: TestClient, runtime: Runtime, write_key: str
) -> None:
    limit = runtime.settings.limits.max_request_bytes
    r = post(client, write_key, b"[" + b" " * limit + b"]")
    assert r.status_code == 413
    assert r.json()["limit_bytes"] == limit
    assert runtime.conservation().total("received") == 0


def test_too_many_events_is_413(client: TestClient, runtime: Runtime, write_key: str) -> None:
    n = runtime.settings.limits.max_events_per_request + 1
    r = post(client, write_key, b"[" + b",".join([b"{}"] * n) + b"]")
    assert r.status_code == 413
    assert r.json()["limit_events"] == n - 1


@pytest.mark.parametrize("auth", [None, "Bearer nope", "Basic !!!", "Token x"])
def test_missing_or_unknown_key_is_401(client: TestClient, auth: str | None) -> None:
    headers = {"Authorization": auth} if auth else {}
    r = client.post("/v1/events", content=b"[]", headers=headers)
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"


def test_basic_auth_write_key(client: TestClient, write_key: str) -> None:
    import base64

    basic = base64.b64encode(f"{write_key}:".encode()).decode()
    r = client.post(
        "/v1/events", content=orjson.dumps([order()]), headers={"Authorization": f"Basic {basic}"}
    )
    assert r.status_code == 200


def test_revoked_key_stops_working(client: TestClient, runtime: Runtime) -> None:
    key, token = runtime.meta.create_key("write", "t", pack="marketplace", source="web")
    assert post(client, token, [order()]).status_code == 200
    runtime.meta.revoke_key(key.key_id)
    runtime.keys._cache.clear()  # skip the 5 s cache TTL
    assert post(client, token, [order()]).status_code == 401


def test_secret_key_cannot_ingest(client: TestClient, operator_key: str) -> None:
    r = post(client, operator_key, [order()])
    assert r.status_code == 403


def test_log_over_cap_is_503_with_retry_after(tmp_path: Any) -> None:
    from gristmill.api.app import create_app
    from tests.conftest import make_settings

    rt = Runtime(make_settings(tmp_path, log={"type": "sqlite", "max_bytes": 2048}))
    try:
        key = rt.meta.create_key("write", "t", pack="marketplace", source="web")[1]
        with TestClient(create_app(rt, start=False)) as c:
            assert post(c, key, [order() for _ in range(20)]).status_code == 200
            r = post(c, key, [order()])
            assert r.status_code == 503
            assert r.headers["retry-after"] == "5"
            received = rt.conservation().total("received")
            rt.loader.drain()
            assert post(c, key, [order()]).status_code == 200
            assert rt.conservation().total("received") == received + 1
    finally:
        rt.stop()


def test_duplicates_across_requests_load_once(
    client: TestClient, runtime: Runtime, write_key: str
) -> None:
    events = [order(event_id=f"dup-{i}") for i in range(5)]
    post(client, write_key, events)
    runtime.loader.drain()
    post(client, write_key, events)
    runtime.loader.drain()
    assert count(runtime) == 5
    c = runtime.conservation()
    assert (c.total("received"), c.total("loaded"), c.total("duplicates")) == (10, 5, 5)


def test_same_event_id_from_two_sources_loads_twice(
    client: TestClient, runtime: Runtime, write_key: str
) -> None:
    other = runtime.meta.create_key("write", "o", pack="marketplace", source="outbox")[1]
    ev = order(event_id="shared")
    post(client, write_key, [ev])
    post(client, other, [ev])
    runtime.loader.drain()
    assert count(runtime) == 2


def test_metrics_expose_conservation(client: TestClient, runtime: Runtime, write_key: str) -> None:
    post(client, write_key, [order(), order("nope")])
    runtime.loader.drain()
    assert client.get("/metrics").status_code == 403  # the test client is not loopback
    runtime.settings.server.metrics_allow = ["testclient"]
    text = client.get("/metrics").text
    assert 'gristmill_events_received_total{pack="marketplace",source="web"} 2.0' in text
    assert 'gristmill_events_loaded_total{pack="marketplace",source="web"} 1.0' in text
    assert 'gristmill_events_quarantined_total{pack="marketplace",source="web"} 1.0' in text
    assert "gristmill_conservation_balanced 1.0" in text
    assert 'gristmill_http_requests_total{route="/v1/events",status="207"} 1.0' in text


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)


@st.composite
def mutated_events(draw: st.DrawFn) -> bytes:
    """A valid order event with some fields replaced by arbitrary JSON (big ints included)."""
    ev = order()
    for key in draw(
        st.sets(
            st.sampled_from(
                ["event_id", "event_type", "occurred_at", "schema_version", "context", "user_id"]
            )
        )
    ):
        ev[key] = draw(JSON_VALUES)
    for key in draw(
        st.sets(
            st.sampled_from(["order_id", "store_id", "vendor_store_id", "amount_cents", "extra"])
        )
    ):
        ev["properties"][key] = draw(JSON_VALUES)
    return json.dumps([ev]).encode()


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=300), JSON_VALUES.map(lambda v: json.dumps(v).encode()), mutated_events()
    )
)
def test_fuzzed_bodies_never_5xx(
    client: TestClient, runtime: Runtime, write_key: str, body: bytes
) -> None:
    r = post(client, write_key, body)
    assert r.status_code < 500, r.text
    runtime.loader.run_once(timeout_s=0)  # whatever was accepted must load
    assert runtime.loader.stats.failures == 0


def test_integer_past_64_bits_is_rejected_not_loaded(
    client: TestClient, runtime: Runtime, write_key: str
) -> None:
    ok = order()
    ok["context"] = {"big": 10**30}  # fine inside JSON columns
    big = order()
    big["properties"]["amount_cents"] = 10**30  # the schema's maximum catches this one
    r = post(client, write_key, json.dumps([ok, big]).encode())
    assert r.status_code == 207
    assert r.json()["results"][1]["reason"] == "schema_violation"
    runtime.loader.drain()
    assert count(runtime) == 1


def test_trace_an_event(
    client: TestClient, runtime: Runtime, write_key: str, operator_key: str
) -> None:
    post(client, write_key, [order(event_id="t-1"), order("nope", event_id="t-2")])
    h = {"Authorization": f"Bearer {operator_key}"}
    assert client.get("/v1/pipeline/events/t-1", headers=h).json()["status"] == "not_found"
    runtime.loader.drain()
    one = client.get("/v1/pipeline/events/t-1", headers=h).json()
    assert one["status"] == "loaded"
    assert one["loaded"][0]["table"] == "marketplace_events"
    assert one["loaded"][0]["source"] == "web"
    two = client.get("/v1/pipeline/events/t-2", headers=h).json()
    assert two["status"] == "quarantined"
    assert two["quarantined"][0]["reason"] == "unknown_event_type"
    # since narrows the search to events received at or after it, loaded or quarantined
    for since in ("1h", "2000-01-01T00:00:00Z"):
        for eid, status in (("t-1", "loaded"), ("t-2", "quarantined")):
            got = client.get(f"/v1/pipeline/events/{eid}?since={since}", headers=h).json()
            assert got["status"] == status, (since, eid)
    later = client.get("/v1/pipeline/events/t-1?since=2999-01-01T00:00:00Z", headers=h).json()
    assert later["status"] == "not_found"
    assert (
        client.get("/v1/pipeline/events/t-2?since=2999-01-01T00:00:00Z", headers=h).json()["status"]
        == "not_found"
    )
    for since, status in (("yesterday", 422), ("2026-13-45T00:00:00Z", 400)):
        bad = client.get(f"/v1/pipeline/events/t-1?since={since}", headers=h)
        assert bad.status_code == status, since  # not the schema's shape / not a time
        assert bad.headers["content-type"].startswith("application/problem+json")


def test_property_of_another_event_types_column_is_not_promoted(
    client: TestClient, runtime: Runtime, write_key: str
) -> None:
    payout = {
        "event_id": "p-1",
        "event_type": "payout_completed",
        "occurred_at": "2026-11-01T10:00:00Z",
        "properties": {"payout_id": "x", "vendor_store_id": "v", "amount_cents": 5, "store_id": 5},
    }  # store_id is another type's column, unchecked here
    assert post(client, write_key, [payout]).status_code == 200
    runtime.loader.drain()
    q = exp.select("store_id", "properties").from_(table_ref("marketplace", "marketplace_events"))
    (row,) = runtime.warehouse.query(q).to_pylist()
    assert row["store_id"] is None
    assert orjson.loads(row["properties"])["store_id"] == 5


@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+14:00", "1899-12-31T23:59:59Z"])
def test_event_times_before_1900_are_rejected(
    client: TestClient, write_key: str, when: str
) -> None:
    r = post(client, write_key, [order(occurred_at=when)])
    assert r.status_code == 422
    assert "1900" in r.json()["errors"][0]["detail"]


def test_deeply_nested_json_is_4xx(client: TestClient, write_key: str) -> None:
    deep = b'{"x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    assert 400 <= post(client, write_key, deep).status_code < 500
    assert 400 <= post(client, write_key, b"[" + deep + b"]").status_code < 500


@pytest.mark.parametrize("force_raw", [False, True])
def test_hour_buckets_across_daylight_saving(
    client: TestClient, runtime: Runtime, write_key: str, operator_key: str, force_raw: bool
) -> None:
    """New York, 2026-11-01: 01:00-04:00 and 01:00-05:00 are two hours; 2026-03-08 has no 02:00."""
    times = [
        "2026-11-01T05:30:00Z",
        "2026-11-01T06:30:00Z",
        "2026-03-08T06:30:00Z",
        "2026-03-08T07:30:00Z",
    ]
    post(client, write_key, [order(occurred_at=t) for t in times])
    runtime.loader.drain()
    h = {"Authorization": f"Bearer {operator_key}"}
    group = "&group_by=store_id" if force_raw else ""  # store_id is not rolled up: rows answer
    fall = client.get(
        "/v1/metrics?metrics=orders&grain=hour&tz=America/New_York"
        f"&start=2026-11-01T00:00:00-04:00&end=2026-11-01T03:00:00-05:00{group}"
        "&debug=true",
        headers=h,
    ).json()
    assert fall["debug"][0]["path"] == ("raw" if force_raw else "rollup")
    counts = {r["bucket"]: r["orders"] for r in fall["rows"]}
    assert counts["2026-11-01T01:00:00-04:00"] == 1
    assert counts["2026-11-01T01:00:00-05:00"] == 1
    spring = client.get(
        "/v1/metrics?metrics=orders&grain=hour&tz=America/New_York"
        f"&start=2026-03-08T00:00:00-05:00&end=2026-03-08T05:00:00-04:00{group}",
        headers=h,
    ).json()
    got = {r["bucket"]: r["orders"] for r in spring["rows"]}
    assert not any(b.startswith("2026-03-08T02:") for b in got)
    assert got["2026-03-08T01:00:00-05:00"] == 1
    assert got["2026-03-08T03:00:00-04:00"] == 1
