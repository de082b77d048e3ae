"""The API contract: what the OpenAPI document promises for ingest and /metrics, that every
error (the framework's own included) is problem+json, and the body and token refusals the
document lists (truncated JSON, NUL in ids, JSON labelled text/plain, oversized JWTs, the
log-cap 503 whose numbers agree)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import orjson
import pytest
from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from gristmill.api.ingest_openapi import request_bodies
from gristmill.api.routers.ingest import ROUTES
from gristmill.runtime import Runtime
from tests.conftest import ROOT, make_settings
from tests.factories import order
from tests.integration.test_readme import needs_curl, run_block

PROBLEM = "application/problem+json"


def is_problem(r: Any, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM, r.headers
    body: dict[str, Any] = r.json()
    assert {"type", "title", "status", "detail"} <= set(body), body
    assert body["status"] == status
    assert body["detail"]
    return body


@pytest.fixture
def spec(client: TestClient) -> dict[str, Any]:
    r = client.get("/openapi.json")
    assert r.status_code == 200
    out: dict[str, Any] = r.json()
    return out


# -- the document ------------------------------------------------------------------------------


def test_every_ingest_operation_documents_bodies_and_error_statuses(spec: dict[str, Any]) -> None:
    assert spec["components"]["schemas"]["Problem"]["required"] == [
        "type",
        "title",
        "status",
        "detail",
    ]
    for method, path in ROUTES:
        op = spec["paths"][path][method.lower()]
        if method == "POST":
            content = op["requestBody"]["content"]
            assert content, path
            for media in content.values():
                assert "schema" in media, (path, media)
            assert any("example" in m for m in content.values()), path
        for status in ("400", "401", "403", "413", "415", "422", "429", "503"):
            got = op["responses"][status]
            assert got["content"][PROBLEM]["schema"] == {"$ref": "#/components/schemas/Problem"}
        for status in ("429", "503"):
            assert "Retry-After" in op["responses"][status]["headers"], (path, status)
        assert op["security"], path


def test_non_ingest_errors_are_documented_as_problems(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    op = spec["paths"]["/v1/quarantine/{quarantine_id}"]["get"]
    for status in ("401", "403", "404", "422"):
        assert PROBLEM in op["responses"][status]["content"], status
    assert {"bearer": []} in op["security"]


def test_metrics_is_documented_as_prometheus_text(spec: dict[str, Any]) -> None:
    ok = spec["paths"]["/metrics"]["get"]["responses"]["200"]
    assert list(ok["content"]) == ["text/plain"]


def test_documented_examples_are_accepted(client: TestClient, write_key: str) -> None:
    """Each dialect's example, sent to its endpoint as documented, is taken whole."""
    sent = {
        "native": "/v1/events",
        "segment": "/v1/batch",
        "posthog": "/batch/",
        "posthog_v1": "/i/v1/analytics/events",
        "snowplow": "/com.snowplowanalytics.snowplow/tp2",
        "cloudevents": "/api/v1/events",
    }
    bodies = request_bodies()
    for dialect, path in sent.items():
        for media, doc in bodies[dialect]["content"].items():
            if "example" not in doc:
                continue
            raw = orjson.dumps(doc["example"]).replace(b"wk_...", write_key.encode())
            r = client.post(
                path,
                content=raw,
                headers={"Authorization": f"Bearer {write_key}", "Content-Type": media},
            )
            assert r.status_code == 200, (dialect, media, r.text)
            body = r.content
            assert b'"rejected":1' not in body, (dialect, r.text)
            assert b'"drop"' not in body, (dialect, r.text)


# -- framework errors --------------------------------------------------------------------------


def test_unknown_path_is_a_problem(client: TestClient) -> None:
    is_problem(client.get("/no/such/thing"), 404)


def test_wrong_method_is_a_problem_with_every_allowed_method(client: TestClient) -> None:
    r = client.request("DELETE", "/batch/")
    body = is_problem(r, 405)
    assert r.headers["allow"] == "GET, POST"
    assert "GET, POST" in body["detail"]
    r = client.request("OPTIONS", "/v1/quarantine/replay")
    assert is_problem(r, 405)
    assert r.headers["allow"] == "POST"


def test_validation_errors_are_problems_with_one_reason_per_item(
    client: TestClient, operator_key: str
) -> None:
    r = client.get(
        "/v1/quarantine?limit=0&include_replayed=maybe",
        headers={"Authorization": f"Bearer {operator_key}"},
    )
    body = is_problem(r, 422)
    paths = {e["path"] for e in body["errors"]}
    assert paths == {"/query/limit", "/query/include_replayed"}
    assert all(e["message"] for e in body["errors"])


def test_encoded_slash_in_a_path_parameter_is_a_problem(
    client: TestClient, operator_key: str
) -> None:
    r = client.get("/v1/quarantine/a%2Fb", headers={"Authorization": f"Bearer {operator_key}"})
    assert "%2F" in is_problem(r, 404)["detail"]


# -- ingest refusals ---------------------------------------------------------------------------


def native(client: TestClient, key: str, body: bytes, ctype: str = "application/json") -> Any:
    return client.post(
        "/v1/events",
        content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": ctype},
    )


def test_truncated_json_is_400_with_the_reason(client: TestClient, write_key: str) -> None:
    whole = orjson.dumps(order())
    for cut in (whole[: len(whole) // 2], b"[" + whole[:-3]):
        body = is_problem(native(client, write_key, cut), 400)
        assert "truncated" in body["detail"], body


def test_empty_body_is_400_with_the_reason(client: TestClient, write_key: str) -> None:
    r = client.post("/v1/batch", content=b"", headers={"Authorization": f"Bearer {write_key}"})
    assert is_problem(r, 400)["detail"] == "the body is empty"


def test_nul_in_ids_is_refused_with_the_reason(client: TestClient, write_key: str) -> None:
    bad = order(event_id="ord\u00001", user_id="u\u00002")
    body = is_problem(native(client, write_key, orjson.dumps([bad])), 422)
    errors = body["errors"][0]["errors"]
    assert {e["path"] for e in errors} == {"/event_id", "/user_id"}
    assert all("NUL" in e["message"] for e in errors)
    # the same refusal on a dialect that answers 200 with per-event verdicts
    msg = {
        "type": "track",
        "event": "Order Created",
        "userId": "u\u00001",
        "messageId": "m-nul",
        "properties": {},
    }
    r = client.post(
        "/v1/batch",
        content=orjson.dumps({"batch": [msg]}),
        headers={"Authorization": f"Bearer {write_key}"},
    )
    assert r.status_code == 200
    assert "NUL" in r.json()["errors"][0]["detail"]


def test_json_labelled_text_plain_is_415_on_native_only(client: TestClient, write_key: str) -> None:
    body = orjson.dumps([order()])
    got = is_problem(native(client, write_key, body, "text/plain;charset=UTF-8"), 415)
    assert "text/plain" in got["detail"]
    assert "application/json" in got["detail"]
    assert native(client, write_key, body, "application/json; charset=utf-8").status_code == 200
    # Segment's and Snowplow's browser beacons label JSON text/plain: still accepted
    seg = {"type": "track", "event": "Order Created", "userId": "u1", "properties": {}}
    r = client.post(
        "/v1/track",
        content=orjson.dumps(seg),
        headers={"Authorization": f"Bearer {write_key}", "Content-Type": "text/plain"},
    )
    assert r.status_code == 200
    assert r.json()["success"] is True


def test_dialect_errors_are_problems_carrying_their_clients_fields(
    client: TestClient, write_key: str
) -> None:
    auth = {"Authorization": f"Bearer {write_key}"}
    seg = is_problem(client.post("/v1/batch", content=b"{nope", headers=auth), 400)
    assert seg["code"] == "undecodable-body"
    assert seg["message"] == seg["detail"]
    ph = is_problem(client.post("/batch/", content=b"{nope", headers=auth), 400)
    assert ph["code"] == "undecodable-body"
    v1 = is_problem(client.post("/i/v1/analytics/events", content=b"{nope", headers=auth), 400)
    assert v1["error"] == "undecodable-body"
    assert v1["error_description"] == v1["detail"]
    sp = client.post("/com.snowplowanalytics.snowplow/tp2", content=b"{nope", headers=auth)
    is_problem(sp, 400)


SECRET = "s" * 40


@pytest.fixture
def jwt_client(tmp_path: Path) -> Iterator[TestClient]:
    rt = Runtime(make_settings(tmp_path / "d", auth={"jwt": {"hs256_secret": SECRET}}))
    with TestClient(create_app(rt, start=False)) as c:
        yield c
    rt.stop()


def test_jwt_over_the_size_limit_is_401_before_verification(jwt_client: TestClient) -> None:
    claims: dict[str, Any] = {"exp": int(time.time()) + 600, "role": "admin"}
    url = "/api/v1/admin/analytics?preset=7d"
    small = jwt.encode(claims, SECRET, algorithm="HS256")
    assert jwt_client.get(url, headers={"Authorization": f"Bearer {small}"}).status_code == 200
    # the same valid signature and claims, padded past 8 KiB: refused for its size alone
    big = jwt.encode({**claims, "pad": "x" * 9000}, SECRET, algorithm="HS256")
    r = jwt_client.get(url, headers={"Authorization": f"Bearer {big}"})
    body = is_problem(r, 401)
    assert f"{len(big)} bytes, over the limit of 8192" in body["detail"]
    # ingest refuses it the same way
    r = jwt_client.post("/v1/events", content=b"[]", headers={"Authorization": f"Bearer {big}"})
    assert "over the limit of 8192" in is_problem(r, 401)["detail"]


def test_log_cap_503_reports_the_numbers_it_acted_on(tmp_path: Path) -> None:
    cap = 2048
    rt = Runtime(make_settings(tmp_path, log={"type": "sqlite", "max_bytes": cap}))
    try:
        key = rt.meta.create_key("write", "t", pack="marketplace", source="web")[1]
        with TestClient(create_app(rt, start=False)) as c:
            assert native(c, key, orjson.dumps([order() for _ in range(20)])).status_code == 200
            r = native(c, key, orjson.dumps([order()]))
            body = is_problem(r, 503)
    finally:
        rt.stop()
    pending, request = body["log_pending_bytes"], body["request_bytes"]
    assert body["log_cap_bytes"] == cap
    assert pending + request > cap
    assert body["retry_after_seconds"] == int(r.headers["retry-after"])
    numbers = [int(n) for n in re.findall(r"\d+", body["detail"])]
    assert numbers == [pending, request, pending + request, cap, body["retry_after_seconds"]]


@needs_curl
def test_api_walkthrough_runs() -> None:
    out = run_block(ROOT / "docs" / "api.md", "api")
    assert "POST /v1/events answers 200 207 400 401 403 413 415 422 429 503" in out
    assert "docs 200" in out
    assert 'src="/docs-assets/redoc.standalone.js"' in out
    assert '"status":400,"detail":"body is not valid JSON: it is truncated' in out
    assert "Content-Type 'text/plain' is not accepted here" in out
    assert "content-type: application/problem+json" in out.lower()
