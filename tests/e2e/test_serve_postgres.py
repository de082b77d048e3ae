"""``gristmill serve`` with the warehouse chosen by settings (GRISTMILL_WAREHOUSE__TYPE=
postgres): events in over HTTP, loaded into PostgreSQL, answered by the vendor view; /readyz
names the warehouse and, when a table goes missing, says which."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from gristmill.demo.process import ServerProcess, free_port
from gristmill.meta.store import MetaStore
from tests.conftest import PACKS
from tests.pg import scratch_database

pytestmark = pytest.mark.postgres


def test_serve_on_postgres(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    meta = MetaStore(f"sqlite:///{data / 'meta.sqlite'}")
    write = meta.create_key("write", "w", pack="marketplace", source="backend")[1]
    vendor = meta.create_key(
        "secret", "v", pack="marketplace", role="vendor", claims={"store_id": "v-1"}
    )[1]
    meta.close()
    with scratch_database() as dsn:
        server = ServerProcess(
            data,
            free_port(),
            packs_dir=PACKS,
            env={"GRISTMILL_WAREHOUSE__TYPE": "postgres", "GRISTMILL_WAREHOUSE__DSN": dsn},
        )
        server.start()
        try:
            ready = httpx.get(server.url + "/readyz").json()
            assert ready["warehouse"] == "postgres"
            when = datetime.now(UTC) - timedelta(hours=2)
            events = [
                {
                    "event_id": f"e{i}",
                    "event_type": "order_created",
                    "schema_version": 1,
                    "occurred_at": when.isoformat(),
                    "properties": {
                        "order_id": f"o{i}",
                        "store_id": "b-1",
                        "vendor_store_id": "v-1" if i % 2 else "v-2",
                        "amount_cents": 1000 + i,
                    },
                }
                for i in range(10)
            ]
            r = httpx.post(
                server.url + "/v1/events",
                json=events,
                headers={"Authorization": f"Bearer {write}"},
            )
            assert r.status_code == 200, r.text
            deadline = time.monotonic() + 30
            while True:
                view = httpx.get(
                    server.url + "/api/v1/vendor/analytics?preset=7d",
                    headers={"Authorization": f"Bearer {vendor}"},
                ).json()
                if view["kpis"]["orders"] == 5 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert view["kpis"]["orders"] == 5
            assert view["kpis"]["gmv_cents"] == sum(1000 + i for i in range(1, 10, 2))
            with psycopg.connect(dsn, autocommit=True) as conn:
                n = conn.execute("SELECT count(*) FROM marketplace.marketplace_events").fetchone()
                assert n == (10,)
                conn.execute("DROP TABLE marketplace.ad_events")
            r = httpx.get(server.url + "/readyz")
            assert r.status_code == 503
            assert "missing table marketplace.ad_events" in r.json()["detail"]
            assert r.headers["retry-after"]
        finally:
            server.stop()
