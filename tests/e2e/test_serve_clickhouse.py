"""``gristmill serve`` with GRISTMILL_WAREHOUSE__TYPE=clickhouse (chdb inside the server
process): events in over HTTP, loaded into ClickHouse, answered by the vendor view; /readyz
names the warehouse; rows and rollups survive a restart. (Readiness naming a missing table is
in the conformance suite: a restarted server provisions the table again.)"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlglot import exp

from gristmill.demo.process import ServerProcess, free_port
from gristmill.meta.store import MetaStore
from gristmill.sql.ddl import table_ref
from gristmill.warehouse.clickhouse.client import ClickHouseWarehouse
from gristmill.warehouse.clickhouse.connection import ChdbConnection
from tests.conftest import PACKS

pytestmark = pytest.mark.clickhouse


def test_serve_on_clickhouse(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    meta = MetaStore(f"sqlite:///{data / 'meta.sqlite'}")
    write = meta.create_key("write", "w", pack="marketplace", source="backend")[1]
    vendor = meta.create_key(
        "secret", "v", pack="marketplace", role="vendor", claims={"store_id": "v-1"}
    )[1]
    meta.close()
    env = {"GRISTMILL_WAREHOUSE__TYPE": "clickhouse"}
    server = ServerProcess(data, free_port(), packs_dir=PACKS, env=env)
    server.start()
    try:
        ready = httpx.get(server.url + "/readyz").json()
        assert ready["warehouse"] == "clickhouse"
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
            server.url + "/v1/events", json=events, headers={"Authorization": f"Bearer {write}"}
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
    finally:
        server.stop()
    # chdb keeps its folder to one process: look while the server is down.
    wh = ClickHouseWarehouse(ChdbConnection(data / "chdb"))
    events_ref = table_ref("marketplace", "marketplace_events")
    n = wh.query(exp.select(exp.func("count", exp.Star()).as_("n")).from_(events_ref))
    assert n.to_pylist() == [{"n": 10}]
    wh.close()
    server = ServerProcess(data, free_port(), packs_dir=PACKS, env=env)
    server.start()
    try:
        r = httpx.get(server.url + "/readyz")
        assert r.status_code == 200
        assert r.json()["warehouse"] == "clickhouse"
        view = httpx.get(
            server.url + "/api/v1/vendor/analytics?preset=7d",
            headers={"Authorization": f"Bearer {vendor}"},
        ).json()
        assert view["kpis"]["orders"] == 5  # the rows and the rollup survived a restart
    finally:
        server.stop()
