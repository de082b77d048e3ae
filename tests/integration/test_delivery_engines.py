"""The lifecycle and track views answer the same on PostgreSQL and ClickHouse as on DuckDB
(the same traffic, shuffled and partly re-sent; SQL rendered per dialect from one tree)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from gristmill.config import ClickHouseSettings, PostgresSettings
from gristmill.demo.delivery import DeliveryConfig, generate_delivery
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.integration.delivery_fixtures import send
from tests.pg import scratch_database

END = datetime(2026, 10, 27, 6, tzinfo=UTC)
RANGE = {"start": (END - timedelta(days=2)).isoformat(), "end": END.isoformat()}
ROUTES = [
    "/delivery/v1/lifecycle",
    "/delivery/v1/branches/br_01/lifecycle",
    "/delivery/v1/drivers",
    "/delivery/v1/branches/br_00/drivers",
]


def _answers(rt: Runtime) -> dict[str, Any]:
    t = generate_delivery(
        DeliveryConfig(days=2, branches=2, drivers_per_branch=2, ping_s=300, end=END)
    )
    send(rt, t.events)
    token = rt.meta.create_key("secret", "ops", pack="delivery", role="operations")[1]
    out = {}
    with TestClient(create_app(rt, start=False)) as c:
        for url in ROUTES:
            r = c.get(url, params=RANGE, headers={"Authorization": f"Bearer {token}"})
            assert r.status_code == 200, r.text
            out[url] = {k: v for k, v in r.json().items() if k not in ("freshness", "as_of")}
    return out


@pytest.fixture(scope="module")
def duck(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    rt = Runtime(make_settings(Path(tmp_path_factory.mktemp("duck")), packs=["delivery"]))
    try:
        yield _answers(rt)
    finally:
        rt.stop()


def _close(a: Any, b: Any, tol: float) -> None:
    """Equal, numbers within ``tol`` (engines keep sub-second instants differently)."""
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _close(a[k], b[k], tol)
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _close(x, y, tol)
    elif isinstance(a, float) or isinstance(b, float):
        assert a == pytest.approx(b, abs=tol)
    else:
        assert a == b


@pytest.mark.postgres
def test_postgres_agrees(duck: dict[str, Any], tmp_path: Path) -> None:
    with scratch_database() as dsn:
        rt = Runtime(
            make_settings(
                tmp_path,
                packs=["delivery"],
                warehouse=PostgresSettings(dsn=dsn),  # type: ignore[arg-type]
            )
        )
        try:
            _close(_answers(rt), duck, 1e-3)
        finally:
            rt.stop()


@pytest.mark.clickhouse
def test_clickhouse_agrees(duck: dict[str, Any], tmp_path: Path) -> None:
    rt = Runtime(
        make_settings(
            tmp_path,
            packs=["delivery"],
            warehouse=ClickHouseSettings(),  # type: ignore[arg-type]
        )
    )
    try:
        _close(_answers(rt), duck, 1e-3)
    finally:
        rt.stop()
