"""Exports to an S3-compatible store: moto's standalone S3 server on 127.0.0.1 (a real HTTP
server speaking the S3 protocol), written through s3fs, read back with plain httpx."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import boto3
import httpx
import pytest
from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from gristmill.demo.marketplace import DemoConfig, generate
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.integration.analytics_fixtures import send

BUCKET = "gm-exports"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
def s3_rt(tmp_path: Path, s3_endpoint: str) -> Iterator[tuple[Runtime, TestClient, dict[str, str]]]:
    settings = make_settings(
        tmp_path / "d",
        exports={
            "destination": f"s3://{BUCKET}/finance",
            "s3": {
                "endpoint_url": s3_endpoint,
                "key": "testing",
                "secret": "testing",
                "region": "us-east-1",
            },
        },
    )
    rt = Runtime(settings)
    end = datetime.now(UTC)
    send(
        rt, generate(DemoConfig(events=3000, days=10, vendors=3, buyers=10, seed=5, end=end)).events
    )
    keys = {
        "vendor": rt.meta.create_key(
            "secret", "v", pack="marketplace", role="vendor", claims={"store_id": "vnd_000"}
        )[1],
        "admin": rt.meta.create_key("secret", "a", pack="marketplace", role="admin")[1],
    }
    try:
        with TestClient(create_app(rt, start=False)) as client:
            yield rt, client, keys
    finally:
        rt.stop()


def _objects(endpoint: str) -> list[str]:
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    return [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]


def test_export_lands_under_the_tenant_prefix_and_the_presigned_url_downloads(
    s3_rt: tuple[Runtime, TestClient, dict[str, str]], s3_endpoint: str
) -> None:
    rt, client, keys = s3_rt
    hdr = {"Authorization": f"Bearer {keys['vendor']}"}
    r = client.post("/v1/exports/marketplace/vendor_daily", json={"period": "mtd"}, headers=hdr)
    assert r.status_code == 202, r.text
    rt.exports.run_pending()
    job: dict[str, Any] = client.get(
        f"/v1/exports/jobs/{r.json()['id']}", params={"expires_s": 120}, headers=hdr
    ).json()
    assert job["status"] == "succeeded", job
    assert job["reconciled"] is True
    month = datetime.now(UTC).strftime("%Y-%m")
    prefix = f"finance/vnd_000/marketplace/vendor_daily/{month}/{job['id']}/"
    assert sorted(_objects(s3_endpoint)) == [
        f"{prefix}manifest.json",
        f"{prefix}vendor_daily_{month}.csv",
    ]
    assert job["object"] == f"s3://{BUCKET}/{prefix}vendor_daily_{month}.csv"
    data = httpx.get(job["url"]).content  # plain HTTP, no credentials: the URL is the grant
    assert data.startswith(b"day,vendor_store_id,orders,gmv_cents,revenue_cents\r\n")
    manifest = httpx.get(job["manifest_url"]).json()
    assert manifest["rows"] == job["rows"]
    assert manifest["sha256"] == job["checksum"]
    # The URL is a SigV4 presigned URL valid for the asked lifetime from now; S3 refuses it
    # after that. (moto does not enforce X-Amz-Expires, so the bound is checked here.)
    q = parse_qs(urlparse(job["url"]).query)
    assert q["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert q["X-Amz-Expires"] == ["120"]
    signed_at = datetime.strptime(q["X-Amz-Date"][0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    expires_at = datetime.fromisoformat(job["expires_at"])
    assert abs((signed_at + timedelta(seconds=120)) - expires_at) <= timedelta(seconds=2)
    # Handing out a presigned URL is what the audit log records (S3 serves the download).
    audit = rt.meta.governance.audit_entries(action="export.download")
    assert [(a.target, a.detail["via"]) for a in audit] == [(job["id"], "presigned_url")]
    assert rt.exports.pending_files() == []  # downloaded (its URL was issued)


def test_admin_export_for_all_lands_under_all_and_expires(
    s3_rt: tuple[Runtime, TestClient, dict[str, str]], s3_endpoint: str
) -> None:
    rt, client, keys = s3_rt
    hdr = {"Authorization": f"Bearer {keys['admin']}"}
    end = datetime.now(UTC)
    body = {"start": (end - timedelta(days=3)).isoformat(), "end": end.isoformat(), "as_job": True}
    r = client.post("/v1/exports/marketplace/marketplace_rows", json=body, headers=hdr)
    assert r.status_code == 202, r.text
    rt.exports.run_pending()
    job = rt.exports.store.get(r.json()["id"])
    assert job is not None
    assert job.status == "succeeded"
    assert f"{BUCKET}/finance/_all/marketplace/marketplace_rows/" in str(job.csv_path)
    assert len(rt.exports.pending_files()) == 2
    assert rt.exports.expire(datetime.now(UTC) + timedelta(seconds=1)) == [job.id]
    assert not [k for k in _objects(s3_endpoint) if job.id in k]
