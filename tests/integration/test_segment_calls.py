"""Segment's quiet failure modes made visible, with the real client library (analytics-python).

identify, page, screen, group and alias land in the pack's traits table by default instead of
quarantine; what is still quarantined shows per source in ``/v1/pipeline/stats`` (rate and
last reasons over a window) and on ``/metrics`` by source and reason, while the client keeps
getting exactly 200.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlglot import exp

from gristmill.core.errors import ConfigError
from gristmill.pack.loader import load_pack
from gristmill.runtime import Runtime
from gristmill.sql.ddl import table_ref
from tests.live import live, wait_loaded
from tests.prom import find, packs_with


def calls(rt: Runtime) -> dict[str, dict[str, Any]]:
    q = exp.select("event_id", "event_type", "user_id", "source", "properties").from_(
        table_ref("marketplace", "segment_calls")
    )
    return {r["event_id"]: r for r in rt.warehouse.query(q).to_pylist()}


def test_non_track_calls_land_in_the_traits_table(rt: Runtime) -> None:
    from segment.analytics import Client

    key = rt.meta.create_key("write", "web", pack="marketplace", source="web")[1]
    with live(rt) as (url, _):
        client = Client(key, host=url, max_retries=3, upload_interval=0.05, upload_size=50)
        client.identify(user_id="u-1", traits={"plan": "pro"}, message_id="c-identify")
        client.page(user_id="u-1", name="Pricing", properties={"path": "/p"}, message_id="c-page")
        client.screen(user_id="u-1", name="Home", message_id="c-screen")
        client.group(user_id="u-1", group_id="g-1", traits={"seats": 5}, message_id="c-group")
        client.alias(previous_id="anon-1", user_id="u-1", message_id="c-alias")
        client.flush()
        client.shutdown()
        wait_loaded(rt, 5)
        got = calls(rt)
        c = rt.conservation()
    assert c.total("quarantined") == 0
    assert {k: v["event_type"] for k, v in got.items()} == {
        "c-identify": "segment.identify",
        "c-page": "segment.page",
        "c-screen": "segment.screen",
        "c-group": "segment.group",
        "c-alias": "segment.alias",
    }
    props = {k: orjson.loads(v["properties"]) for k, v in got.items()}
    assert props["c-identify"] == {"plan": "pro"}
    assert props["c-page"] == {"path": "/p", "name": "Pricing"}
    assert props["c-group"] == {"seats": 5, "groupId": "g-1"}
    assert props["c-alias"] == {"previousId": "anon-1"}
    assert {v["source"] for v in got.values()} == {"web"}


def test_traits_table_declarations(tmp_path: Path) -> None:
    def mappings(**extra: Any) -> dict[str, Any]:
        return {"segment": {"Order Paid": "order_paid"}, **extra}

    def pack(name: str, **extra: Any) -> Any:
        return load_pack(packs_with(tmp_path / name, mappings=mappings(**extra)) / "marketplace")

    default = pack("a")
    assert default.spec.event_types["segment.identify"].table == "segment_calls"
    assert default.spec.categories["traits"].retention.days == 400  # the engine's own
    off = pack("b", traits_table=False)  # opted out: the unmapped policy holds
    assert "segment_calls" not in off.spec.tables
    assert "$identify" not in off.spec.mappings.segment
    named = pack("c", traits_table={"table": "profiles", "category": "transaction"})
    assert named.spec.event_types["segment.page"].table == "profiles"
    assert named.spec.event_types["segment.page"].category == "transaction"
    assert "traits" not in named.spec.categories
    own = pack("d", segment={"Order Paid": "order_paid", "$identify": "order_paid"})
    assert own.spec.mappings.segment["$identify"].event_type == "order_paid"  # theirs wins
    assert "segment.identify" not in own.spec.event_types
    with pytest.raises(ConfigError, match=r"mappings\.traits_table: table 'ad_events'"):
        pack("e", traits_table={"table": "ad_events"})
    with pytest.raises(ConfigError, match="unknown category 'nope'"):
        pack("f", traits_table={"category": "nope"})


def test_quarantine_shows_per_source_while_segment_gets_200(rt: Runtime) -> None:
    from segment.analytics import Client

    web = rt.meta.create_key("write", "web", pack="marketplace", source="web")[1]
    app = rt.meta.create_key("write", "app", pack="marketplace", source="app")[1]
    admin = rt.meta.create_key("secret", "ops", pack="marketplace", role="admin")[1]
    answers: list[int] = []
    with live(rt) as (url, _):
        for key, events in ((web, ["Cart Viewed", "Cart Viewed", "Order Paid"]), (app, [])):
            client = Client(key, host=url, max_retries=0, upload_interval=0.05, upload_size=50)
            for i, name in enumerate(events):
                client.track(user_id="u", event=name, properties={"n": i}, message_id=f"t-{i}")
            client.identify(user_id="u", traits={"plan": "pro"})
            client.flush()
            client.shutdown()
        # the Segment answer stays 200 for a batch that is all quarantined
        r = httpx.post(
            url + "/v1/batch",
            json={"batch": [{"type": "track", "event": "Nope", "userId": "u"}]},
            auth=(web, ""),
        )
        answers.append(r.status_code)
        wait_loaded(rt, 6)
        h = {"Authorization": f"Bearer {admin}"}
        stats = httpx.get(url + "/v1/pipeline/stats", params={"window": "1h"}, headers=h).json()
        bad = httpx.get(url + "/v1/pipeline/stats", params={"window": "soon"}, headers=h)
        metrics = httpx.get(url + "/metrics").text
    assert answers == [200]
    assert bad.status_code == 400
    assert stats["window"] == "1h"
    by = {s["source"]: s for s in stats["sources"]}
    assert set(by) == {"web", "app"}
    # web: Cart Viewed x2 and Nope unmapped, Order Paid without its properties, identify loaded
    assert (by["web"]["accepted"], by["web"]["quarantined"]) == (1, 4)
    assert by["web"]["quarantine_rate"] == pytest.approx(0.8)
    reasons = {r["reason"]: r["count"] for r in by["web"]["last_reasons"]}
    assert reasons == {"unmapped": 3, "schema_violation": 1}
    ats = [r["at"] for r in by["web"]["last_reasons"]]
    assert ats == sorted(ats, reverse=True)  # newest first
    assert (by["app"]["accepted"], by["app"]["quarantined"], by["app"]["quarantine_rate"]) == (
        1,
        0,
        0.0,
    )
    assert by["app"]["last_reasons"] == []
    unmapped = find(
        metrics, "gristmill_quarantined_by_reason_total", source="web", reason="unmapped"
    )
    assert [s.value for s in unmapped] == [3.0]
    collected = find(metrics, "gristmill_collected_total", source="web")
    assert [s.value for s in collected] == [5.0]
