"""Security regressions found in review: dashboard sessions end with their key, error pages
escape what the caller sent, pack roles only see their own pack's pipeline data."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gristmill.core.errors import ConfigError
from gristmill.pack.loader import load_pack
from gristmill.runtime import Runtime
from tests.conftest import PACKS


def test_session_stops_working_when_its_key_is_revoked(
    client: TestClient, runtime: Runtime
) -> None:
    key, token = runtime.meta.create_key("secret", "a", pack="marketplace", role="admin")
    assert client.post("/ui/login", data={"key": token}, follow_redirects=False).status_code == 303
    assert client.get("/v1/freshness").status_code == 200  # the session cookie works
    runtime.meta.revoke_key(key.key_id)
    runtime.keys._active.clear()  # skip the 5 s TTL
    assert client.get("/v1/freshness").status_code == 401
    assert client.get("/ui", follow_redirects=False).status_code == 303


def test_dashboard_error_page_escapes_input(client: TestClient, runtime: Runtime) -> None:
    token = runtime.meta.create_key("secret", "a", pack="marketplace", role="admin")[1]
    client.post("/ui/login", data={"key": token})
    r = client.get("/ui", params={"tz": "<script>alert(1)</script>"})
    assert r.status_code == 400
    assert "<script>alert(1)" not in r.text  # the page has its own <script>, not this one
    assert "&lt;script&gt;" in r.text


def test_pack_role_sees_only_its_pack_in_pipeline_endpoints(
    client: TestClient, runtime: Runtime
) -> None:
    admin = runtime.meta.create_key("secret", "a", pack="marketplace", role="admin")[1]
    h = {"Authorization": f"Bearer {admin}"}
    body = client.get("/v1/pipeline/stats", headers=h).json()
    assert body["packs"] == ["marketplace"]
    assert all(s["pack"] == "marketplace" for s in body["balances"])
    assert all(s["pack"] == "marketplace" for s in body["sources"])


@pytest.mark.parametrize("perm", ["quarantine:read", "pipeline:read", "ingest"])
def test_scoped_roles_cannot_hold_unscoped_permissions(tmp_path: Path, perm: str) -> None:
    dst = tmp_path / "marketplace"
    shutil.copytree(PACKS / "marketplace", dst)
    f = dst / "pack.yaml"
    f.write_text(
        f.read_text().replace(
            "    permissions: [metrics:read, events:read, freshness:read, exports:create",
            f"    permissions: [metrics:read, events:read, freshness:read, {perm}, exports:create",
        )
    )
    with pytest.raises(ConfigError, match=r"roles\.vendor\.permissions\.3"):
        load_pack(dst)
