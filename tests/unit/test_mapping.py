"""Property renames of a dialect mapping (pack ``mappings.<dialect>.<name>.properties``)."""

from __future__ import annotations

from gristmill.collect.dialect import apply_mapping
from gristmill.pack.mapping import EventMapping


def test_renames_drops_and_dotted_paths() -> None:
    m = EventMapping(
        event_type="order_paid",
        properties={"orderId": "order_id", "cart.total": "amount_cents", "missing": "x"},
        drop=["$lib"],
    )
    props = {"orderId": "o-1", "cart": {"total": 1250}, "$lib": "web", "note": "n"}
    assert apply_mapping(m, props) == {
        "order_id": "o-1",
        "amount_cents": 1250,
        "cart": {"total": 1250},  # a dotted path is copied out, its object stays
        "note": "n",  # unmapped properties pass through
    }
    assert props["orderId"] == "o-1"  # the client's dict is not changed


def test_renames_read_the_properties_as_sent() -> None:
    swap = EventMapping(event_type="e", properties={"a": "b", "b": "a"})
    assert apply_mapping(swap, {"a": 1, "b": 2}) == {"a": 2, "b": 1}
    chain = EventMapping(event_type="e", properties={"a": "b", "b": "c"})
    assert apply_mapping(chain, {"a": 1, "b": 2}) == {"b": 1, "c": 2}
