"""A loaded marketplace warehouse with known events, shared by the analytics tests."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from gristmill.core.clock import from_datetime, iso
from gristmill.demo.marketplace import DemoConfig, generate
from gristmill.runtime import Runtime
from tests.conftest import make_settings


@dataclass
class Loaded:
    rt: Runtime
    client: TestClient
    events: list[dict[str, Any]]
    """Distinct valid events in the warehouse, as sent."""
    keys: dict[str, str]

    def get(self, who: str, url: str) -> Any:
        headers = {"Authorization": f"Bearer {self.keys[who]}"} if who in self.keys else {}
        return self.client.get(url, headers=headers)


def send(rt: Runtime, events: list[dict[str, Any]], source: str = "backend") -> None:
    for i in range(0, len(events), 500):
        p = rt.collector.prepare(
            pack="marketplace",
            source=source,
            dialect="native",
            raw=orjson.dumps(events[i : i + 500]),
        )
        rt.collector.submit_sync(p)
    rt.loader.drain()


def late_events(base: list[dict[str, Any]], n: int, rng: random.Random) -> list[dict[str, Any]]:
    """Fresh orders placed in hours the rollup already holds (arriving late)."""
    out = []
    for i in range(n):
        src = rng.choice([e for e in base if e["event_type"] == "order_created"])
        late = dict(src)
        late["event_id"] = f"late-{i}"
        late["properties"] = {
            **src["properties"],
            "order_id": f"late-{i}",
            "amount_cents": rng.randint(100, 90_000),
        }
        late["occurred_at"] = iso(
            from_datetime(datetime.fromisoformat(src["occurred_at"]))
            + rng.randint(0, 3_000_000_000)
        )
        out.append(late)
    return out


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    rt = Runtime(make_settings(Path(tmp_path_factory.mktemp("analytics"))))
    with load_known_events(rt, datetime.now(UTC) - timedelta(hours=1)) as done:
        yield done


@contextmanager
def load_known_events(rt: Runtime, end: datetime) -> Iterator[Loaded]:
    """The same events (a function of ``end``), late arrivals and duplicates, into ``rt``;
    stops the runtime afterwards."""
    traffic = generate(
        DemoConfig(
            events=24_000,
            days=95,
            vendors=8,
            buyers=40,
            seed=21,
            duplicate_rate=0.02,
            invalid_rate=0.0,
            end=end,
        )
    )
    valid: dict[tuple[str, str], dict[str, Any]] = {}
    by_source: dict[str, list[dict[str, Any]]] = {}
    for src, ev in zip(traffic.sources, traffic.events, strict=True):
        valid.setdefault((src, ev["event_id"]), ev)
        by_source.setdefault(src, []).append(ev)
    for src, evs in by_source.items():
        send(rt, evs, src)
    rng = random.Random(4)
    orders_sent = [e for (s, _), e in valid.items() if s == "backend"]
    late = late_events(orders_sent, 300, rng)
    send(rt, late)  # late: after their hours were rolled up
    send(rt, rng.sample(late, 50) + rng.sample(orders_sent, 200))  # duplicates
    for e in late:
        valid[("backend", e["event_id"])] = e
    keys = {
        "vendor_a": rt.meta.create_key(
            "secret", "a", pack="marketplace", role="vendor", claims={"store_id": "vnd_000"}
        )[1],
        "vendor_b": rt.meta.create_key(
            "secret", "b", pack="marketplace", role="vendor", claims={"store_id": "vnd_001"}
        )[1],
        "vendor_none": rt.meta.create_key(
            "secret", "n", pack="marketplace", role="vendor", claims={"store_id": "vnd_999"}
        )[1],
        "admin": rt.meta.create_key("secret", "ad", pack="marketplace", role="admin")[1],
        "operator": rt.meta.create_key("secret", "op", role="operator")[1],
        "writer": rt.meta.create_key("write", "w", pack="marketplace", source="web")[1],
    }
    with TestClient(create_app(rt, start=False)) as client:
        yield Loaded(rt, client, list(valid.values()), keys)
    rt.stop()
