"""A served sales_feeds pack with two businesses' owner keys, for the feeds tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from gristmill.runtime import Runtime
from tests.conftest import make_settings

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "feeds"


@dataclass
class Feeds:
    rt: Runtime
    client: TestClient
    keys: dict[str, str]

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}

    def preview(self, who: str, name: str, content: bytes, **form: Any) -> Any:
        return self.client.post(
            "/dashboard/data-feeds/preview",
            headers=self.h(who),
            files={"file": (name, content, "text/csv")},
            data={"data_type": "sales", **form},
        )

    def commit(self, who: str, token: str, **body: Any) -> Any:
        payload = {"upload_token": token, "data_type": "sales", **body}
        return self.client.post("/dashboard/data-feeds/commit", headers=self.h(who), json=payload)

    def status(self, who: str, feed_id: int) -> Any:
        return self.client.get(
            f"/dashboard/data-feeds/{feed_id}/transform-status", headers=self.h(who)
        )

    def wait(self, who: str, feed_id: int, timeout_s: float = 30.0) -> dict[str, Any]:
        """Poll like the UI does until the feed is terminal (bounded)."""
        deadline = time.monotonic() + timeout_s
        while True:
            body: dict[str, Any] = self.status(who, feed_id).json()
            if body["status"] in ("transformed", "failed") or time.monotonic() > deadline:
                return body
            time.sleep(0.05)

    def products(self, who: str, names: list[str], **extra: Any) -> Any:
        return self.client.post(
            "/dashboard/data-feeds/auto-create-products",
            headers=self.h(who),
            json={"products": [{"name": n, **extra} for n in names]},
        )


@pytest.fixture(name="feeds")
def feeds_fixture(tmp_path: Path) -> Iterator[Feeds]:
    settings = make_settings(
        tmp_path / "data", packs=["sales_feeds"], feeds={"max_upload_bytes": 1 << 20}
    )
    rt = Runtime(settings)
    keys = {
        "b1": rt.meta.create_key(
            "secret", "b1", pack="sales_feeds", role="owner", claims={"business_id": "1"}
        )[1],
        "b2": rt.meta.create_key(
            "secret", "b2", pack="sales_feeds", role="owner", claims={"business_id": "2"}
        )[1],
        "ops": rt.meta.create_key("secret", "ops", role="operator")[1],
    }
    app = create_app(rt, start=False)
    try:
        with TestClient(app) as c:
            yield Feeds(rt, c, keys)
    finally:
        rt.stop()
