"""A log holding row frames (version 1, written before column frames) and column frames
(version 2) side by side loads exactly once into DuckDB through the real loader."""

from __future__ import annotations

import orjson
from sqlglot import exp

from gristmill.core.envelope import encode_row_frame
from gristmill.log.base import LogRecord
from gristmill.runtime import Runtime
from gristmill.sql.ddl import table_ref
from tests.factories import order


def _ids(rt: Runtime, table: str) -> list[str]:
    q = exp.select("event_id").from_(table_ref("marketplace", table)).order_by("event_id")
    return [str(r["event_id"]) for r in rt.warehouse.query(q).to_pylist()]


def test_mixed_log_loads_exactly_once(runtime: Runtime) -> None:
    rt = runtime
    click = {
        "event_id": "ad-1",
        "event_type": "ad_click",
        "schema_version": 1,
        "occurred_at": "2026-11-01T10:00:00Z",
        "properties": {
            "ad_id": "ad9",
            "campaign_id": "c1",
            "vendor_store_id": "v1",
            "store_id": "s1",
            "placement": "search",
            "cost_cents": 12,
        },
    }
    old_events = [order(event_id=f"old-{i}") for i in range(5)] + [click]
    new_events = [order(event_id=f"new-{i}") for i in range(5)] + [
        {**click, "event_id": "ad-2"},
        order(event_id="old-0"),  # a re-send of an event an old frame holds
    ]
    for i, events in enumerate([old_events, new_events, old_events]):
        p = rt.collector.prepare(
            pack="marketplace", source="web", dialect="native", raw=orjson.dumps(events)
        )
        f = p.frame
        if i == 1:
            rt.collector.submit_sync(p)  # version 2, as the collector writes today
        else:  # version 1, as a log written before column frames holds it
            body = encode_row_frame(f)
            rt.log.append([LogRecord(f.pack, f.source, f.count, f.received_at, body)])
    rt.loader.drain()
    assert _ids(rt, "marketplace_events") == sorted(
        [f"old-{i}" for i in range(5)] + [f"new-{i}" for i in range(5)]
    )
    assert _ids(rt, "ad_events") == ["ad-1", "ad-2"]
    c = rt.conservation()
    assert c.balanced
    assert c.total("loaded") == 12
    assert c.total("in_flight") == 0
    assert c.total("received") == 19
    assert c.total("duplicates") == 7
