"""A queue consumer's batch of messages becomes few frames: consecutive messages that say the
same about their batch share one frame (the loader pays its per-frame cost once, as for an
HTTP batch), a message that cannot be read keeps a frame of its own with its bytes, and a
schema-violating one is quarantined with its own bytes from inside the shared frame."""

from __future__ import annotations

import threading
from contextlib import ExitStack
from pathlib import Path

import orjson

from gristmill.consume import open_consumer
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.factories import order


def test_messages_share_frames_and_keep_their_bytes(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "data")
    ok = [orjson.dumps(order(event_id=f"b-{i}")) for i in range(3)]
    bad = orjson.dumps(order(event_id="b-bad", amount="12.50"))
    pair = orjson.dumps([order(event_id="b-p1"), order(event_id="b-p2")])
    bodies = [ok[0], ok[1], b"", bad, pair, ok[2], ok[2]]
    stop = threading.Event()
    with ExitStack() as stack:
        sink = open_consumer(settings, stack, stop=stop).sink
        records = sink.feed.messages(bodies)
        assert [r.count for r in records] == [2, 1, 5]
        assert sink.durable(bodies)
    rt = Runtime(settings)
    try:
        rt.loader.drain()
        ids = sorted(
            str(v)
            for v in rt.warehouse.query_sql(
                "SELECT event_id FROM marketplace.marketplace_events"
            ).column(0)
        )
        assert ids == ["b-0", "b-1", "b-2", "b-p1", "b-p2"]
        q = rt.warehouse.query_sql("SELECT reason, raw FROM _gristmill.quarantine").to_pylist()
        assert sorted((r["reason"], bytes(r["raw"])) for r in q) == [
            ("schema_violation", bad),
            ("undecodable", b""),
        ]
        c = rt.conservation()
        assert c.balanced
        assert (c.total("received"), c.total("loaded")) == (8, 5)
        assert (c.total("quarantined"), c.total("duplicates")) == (2, 1)  # b-2 twice
    finally:
        rt.stop()
