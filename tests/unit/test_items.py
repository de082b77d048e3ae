"""Splitting bodies into items while keeping each item's original bytes."""

from __future__ import annotations

import pytest

from gristmill.collect.items import BodyNotJSON, parse_object, split_items


def test_array_keeps_original_bytes_per_item() -> None:
    body = b'[ {"a": 1},\n  {"b" : [1, 2]} ]'
    items = split_items(body)
    assert [i.raw for i in items] == [b'{"a": 1}', b'{"b" : [1, 2]}']
    assert [parse_object(i) for i in items] == [{"a": 1}, {"b": [1, 2]}]


def test_ndjson_with_crlf_and_blank_lines() -> None:
    items = split_items(b'{"a":1}\r\n\r\n{"b":2}\n', "application/x-ndjson")
    assert [parse_object(i) for i in items] == [{"a": 1}, {"b": 2}]
    assert [i.index for i in items] == [0, 1]


def test_single_pretty_printed_object() -> None:
    items = split_items(b'{\n  "a": 1\n}', "application/json")
    assert len(items) == 1
    assert parse_object(items[0]) == {"a": 1}


def test_broken_ndjson_line_rejects_only_that_line() -> None:
    items = split_items(b'{"a":1}\n{"b":\n{"c":3}\n')
    parsed = [parse_object(i) for i in items]
    assert parsed[0] == {"a": 1}
    assert parsed[2] == {"c": 3}
    assert "not valid JSON" in str(parsed[1])


def test_non_object_items() -> None:
    items = split_items(b'[1, "x", {"ok": true}]')
    assert "got int" in str(parse_object(items[0]))
    assert parse_object(items[2]) == {"ok": True}


def test_broken_array_is_refused_as_a_whole() -> None:
    with pytest.raises(BodyNotJSON):
        split_items(b'[{"a": 1}, {"b": ')


def test_empty_body_has_no_items() -> None:
    assert split_items(b"  \n ") == []


def test_one_truncated_object_is_a_body_error_with_the_reason() -> None:
    """A cut-off upload of one event is a 400 for the request, not an NDJSON line to reject."""
    with pytest.raises(BodyNotJSON, match="truncated"):
        split_items(b'{"event_id": "e1", "event_type": ', "application/json")
    with pytest.raises(BodyNotJSON, match="truncated"):
        split_items(b'[{"event_id": "e1"}, {"event_id": ')


def test_truncated_last_ndjson_line_still_rejects_only_that_line() -> None:
    items = split_items(b'{"a":1}\n{"b":', "application/json")
    assert len(items) == 2
    assert parse_object(items[0]) == {"a": 1}
    assert isinstance(parse_object(items[1]), str)
