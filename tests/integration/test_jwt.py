"""JWT bearer tokens: HS256, RS256 from a JWKS file, claim mapping, expiry, bad signatures,
and the refusal to run in production with a placeholder secret."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient
from jwt.algorithms import RSAAlgorithm
from pydantic import ValidationError

from gristmill.api.app import create_app
from gristmill.config import Settings
from gristmill.runtime import Runtime
from tests.conftest import PACKS, make_settings

SECRET = "s" * 40
URL = "/api/v1/vendor/analytics?preset=7d"


def hs(claims: dict[str, object], secret: str = SECRET) -> str:
    return jwt.encode({"exp": int(time.time()) + 600, **claims}, secret, algorithm="HS256")


@pytest.fixture
def jwt_client(tmp_path: Path) -> TestClient:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    pub["kid"] = "k1"
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [pub]}))
    rt = Runtime(
        make_settings(
            tmp_path / "d",
            auth={
                "jwt": {
                    "hs256_secret": SECRET,
                    "jwks_file": str(jwks),
                    "role_claim": "app.role",
                    "claim_map": {"store_id": "app.store"},
                    "audience": "gristmill",
                }
            },
        )
    )
    client = TestClient(create_app(rt, start=False))
    client.rsa_key = key  # type: ignore[attr-defined]
    yield client  # type: ignore[misc]
    rt.stop()


def get(client: TestClient, token: str, url: str = URL) -> int:
    return client.get(url, headers={"Authorization": f"Bearer {token}"}).status_code


def test_hs256_with_nested_claims(jwt_client: TestClient) -> None:
    ok = hs({"app": {"role": "vendor", "store": "vnd_1"}, "aud": "gristmill"})
    assert get(jwt_client, ok) == 200
    admin = hs({"app": {"role": "admin"}, "aud": "gristmill"})
    assert get(jwt_client, admin) == 403  # admin is not a vendor-view role
    assert get(jwt_client, admin, "/api/v1/admin/analytics?preset=7d") == 200


def test_rs256_from_jwks(jwt_client: TestClient) -> None:
    token = jwt.encode(
        {
            "exp": int(time.time()) + 60,
            "aud": "gristmill",
            "app": {"role": "vendor", "store": "vnd_1"},
        },
        jwt_client.rsa_key,
        algorithm="RS256",
        headers={"kid": "k1"},
    )  # type: ignore[attr-defined]
    assert get(jwt_client, token) == 200


@pytest.mark.parametrize(
    "token",
    [
        hs({"app": {"role": "vendor", "store": "v"}, "aud": "gristmill"}, secret="x" * 40),
        jwt.encode(
            {
                "exp": int(time.time()) - 3600,
                "aud": "gristmill",
                "app": {"role": "vendor", "store": "v"},
            },
            SECRET,
            algorithm="HS256",
        ),
        hs({"app": {"role": "vendor", "store": "v"}, "aud": "someone-else"}),
        jwt.encode({"aud": "gristmill", "app": {"role": "vendor"}}, SECRET, algorithm="HS256"),
        "eyJhbGciOiJub25lIn0.eyJhcHAiOnsicm9sZSI6ImFkbWluIn19.",
    ],
)
def test_bad_tokens_are_401(jwt_client: TestClient, token: str) -> None:
    assert get(jwt_client, token) == 401


def test_missing_scope_claim_is_403(jwt_client: TestClient) -> None:
    assert get(jwt_client, hs({"app": {"role": "vendor"}, "aud": "gristmill"})) == 403


def production(tmp_path: Path, jwt_settings: dict[str, str]) -> Settings:
    return Settings(
        environment="production", data_dir=tmp_path, packs_dir=PACKS, auth={"jwt": jwt_settings}
    )  # type: ignore[arg-type]


def test_production_refuses_placeholder_secret_and_missing_audience(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="placeholder or shorter"):
        production(tmp_path, {"hs256_secret": "changeme", "audience": "a"})
    with pytest.raises(ValidationError, match="audience is required"):
        production(tmp_path, {"hs256_secret": "k" * 48})
    production(tmp_path, {"hs256_secret": "k" * 48, "audience": "a"})


def test_tokens_cannot_claim_built_in_roles(jwt_client: TestClient) -> None:
    for role in ("operator", "writer"):
        token = hs({"app": {"role": role}, "aud": "gristmill"})
        assert get(jwt_client, token, "/v1/pipeline/stats") == 401
