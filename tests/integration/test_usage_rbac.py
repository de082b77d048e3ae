"""RBAC and audit of the usage pack's analytics endpoints: every endpoint x role x org.

Allowed calls answer 200 and carry no byte of another org (every org id in the body is the
caller's); refused ones answer 403 (wrong role) or 404 (another org: no oracle of which orgs
exist). Every call — allowed or refused — appears exactly once in the audit log with the
caller, its role, the path, the parameters and the result; and nothing can rewrite the log:
no route changes it, and the metadata store refuses UPDATE and DELETE on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from gristmill.meta.governance import audit_log
from gristmill.runtime import Runtime
from tests.integration.usage_fixtures import END, loaded_runtime

ORGS = ["org_000", "org_001", "org_002"]
RANGE = {"start": "2026-11-27T00:00:00Z", "end": END.isoformat()}
ENDPOINTS = {
    "usage": "/analytics/v1/orgs/{org}/usage",
    "reliability": "/analytics/v1/orgs/{org}/reliability",
    "platform_usage": "/analytics/v1/usage",
}
ALLOWED = {  # view -> roles (the pack's declaration, restated independently)
    "usage": {"org_admin", "finance", "platform_admin"},
    "reliability": {"org_admin", "engineer", "platform_admin"},
    "platform_usage": {"finance", "platform_admin"},
}
SCOPED = {"org_admin", "engineer"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Runtime, TestClient]]:
    with (
        loaded_runtime(Path(tmp_path_factory.mktemp("rbac"))) as (rt, _),
        TestClient(create_app(rt, start=False)) as client,
    ):
        yield rt, client


def _callers(rt: Runtime) -> dict[str, tuple[str, str | None, str]]:
    """name -> (role, own org, token)."""
    out: dict[str, tuple[str, str | None, str]] = {}
    for role in ("org_admin", "engineer", "finance", "platform_admin"):
        orgs: list[str | None] = list(ORGS[:2]) if role in SCOPED else [None]
        for org in orgs:
            claims = {"org_id": org} if org else {}
            token = rt.meta.create_key(
                "secret", f"{role}-{org}", pack="usage_metering", role=role, claims=claims
            )[1]
            out[f"{role}:{org}"] = (role, org, token)
    return out


def _org_ids(body: Any) -> set[str]:
    """Every org id anywhere in a JSON body."""
    found: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for k, x in v.items():
                if k in ("org_id", "orgId") and isinstance(x, str):
                    found.add(x)
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)

    walk(body)
    return found


def test_every_endpoint_role_and_org(world: tuple[Runtime, TestClient]) -> None:
    rt, client = world
    callers = _callers(rt)
    before = rt.governance.store.audit_entries(limit=1)
    first_id = before[0].id if before else 0
    calls: list[tuple[str, str, int]] = []
    for view, template in ENDPOINTS.items():
        for name, (role, own, token) in callers.items():
            targets = ORGS if "{org}" in template else [None]
            for org in targets:
                path = template.format(org=org)
                r = client.get(path, params=RANGE, headers={"Authorization": f"Bearer {token}"})
                if role not in ALLOWED[view]:
                    want = 403
                elif role in SCOPED and org != own:
                    want = 404
                else:
                    want = 200
                assert r.status_code == want, (name, path, r.text[:200])
                if want == 200:
                    seen = _org_ids(r.json())
                    if role in SCOPED:
                        assert seen <= {own}, (name, path, seen)  # 0 foreign bytes
                        assert all(o.encode() not in r.content for o in ORGS if o != own)
                    else:
                        assert seen, (name, path)
                else:
                    assert r.headers["content-type"].startswith("application/problem+json")
                    assert all(o.encode() not in r.content for o in ORGS if o != org)
                calls.append((name, path, want))
    entries = [
        e
        for e in reversed(rt.governance.store.audit_entries(limit=1000))
        if e.id > first_id and e.action == "views.read"
    ]
    assert len(entries) == len(calls)  # once each, in order
    for e, (name, path, status) in zip(entries, calls, strict=True):
        role, _, _ = callers[name]
        assert (e.target, e.detail["result"], e.detail["role"]) == (path, status, role)
        assert e.detail["params"] == RANGE
        assert e.actor.startswith("secret:")


def test_nothing_rewrites_the_audit_log(world: tuple[Runtime, TestClient]) -> None:
    rt, client = world
    for route in client.app.routes:  # type: ignore[attr-defined]
        path = getattr(route, "path", "")
        if "audit" in path:
            assert getattr(route, "methods", set()) <= {"GET", "HEAD"}, path
    rt.governance.store.audit("test", "probe")
    with rt.meta.engine.begin() as c, pytest.raises(sa.exc.DatabaseError, match="append-only"):
        c.execute(audit_log.update().values(action="forged"))
    with rt.meta.engine.begin() as c, pytest.raises(sa.exc.DatabaseError, match="append-only"):
        c.execute(audit_log.delete())
    assert rt.governance.store.audit_entries(limit=1)[0].action == "probe"


EXPORT_ALLOWED = {
    "incident": {"engineer", "org_admin", "platform_admin"},
    "finance": {"finance", "platform_admin"},
}


def test_export_endpoints_every_role_and_org(world: tuple[Runtime, TestClient]) -> None:
    """The seed's export routes: allowed calls answer 200/202 with only the caller's org in
    them; others 403 or 404; each refused call is one audit row, each accepted one an
    ``export.create`` row."""
    rt, client = world
    callers = _callers(rt)
    first_id = rt.governance.store.audit_entries(limit=1)[0].id
    window = {"start": "2026-11-29T00:00:00Z", "end": "2026-11-29T06:00:00Z"}
    expected: list[tuple[str, int]] = []
    for name, (role, own, token) in callers.items():
        auth = {"Authorization": f"Bearer {token}"}
        for org in ORGS:
            r = client.post(f"/analytics/v1/orgs/{org}/exports/incident", json=window, headers=auth)
            if role not in EXPORT_ALLOWED["incident"]:
                want = 403
            elif role in SCOPED and org != own:
                want = 404
            else:
                want = 200
            assert r.status_code == want, (name, org, r.text[:200])
            if want == 200:
                assert all(o.encode() not in r.content for o in ORGS if o != org)
            expected.append(("exports.post" if want >= 400 else "export.create", want))
        r = client.post("/analytics/v1/exports", json={"period": "2026-11"}, headers=auth)
        want = 202 if role in EXPORT_ALLOWED["finance"] else 403
        assert r.status_code == want, (name, r.text[:200])
        expected.append(("exports.post" if want >= 400 else "export.create", want))
    entries = [
        e
        for e in reversed(rt.governance.store.audit_entries(limit=1000))
        if e.id > first_id and e.action in ("exports.post", "export.create")
    ]
    assert [
        (e.action, e.detail.get("result", 200 if e.detail.get("mode") == "stream" else 202))
        for e in entries
    ] == expected
