"""Pub/Sub pieces that need no service: record <-> message attributes, ordering keys,
publish batching within Pub/Sub's limits, error classification, the consumer's message ->
request body mapping (CloudEvents binary mode), subscription names and batch draining."""

from __future__ import annotations

import base64
import queue

import orjson
import pytest

from gristmill.config import ConsumeSettings
from gristmill.consume.pubsub import drain, message_body, subscription_path
from gristmill.log.base import LogRecord
from gristmill.log.pubsub import (
    MAX_MESSAGE_BYTES,
    MAX_REQUEST_MESSAGES,
    PoisonMessage,
    attributes,
    classify,
    message_size,
    ordering_key,
    publish_batches,
    record_of,
)


def test_a_record_travels_as_attributes_and_data() -> None:
    r = LogRecord("marketplace", "web", 3, 1_700_000_000_000_000, b"frame", suppressed=2)
    attrs = attributes(r)
    assert all(isinstance(v, str) for v in attrs.values())
    assert attrs["gm-pack"] == "marketplace"
    assert attrs["gm-count"] == "3"
    assert record_of(attrs, b"frame") == r
    plain = LogRecord("marketplace", "web", 1, 5, b"x")
    assert "gm-suppressed" not in attributes(plain)
    assert record_of(attributes(plain), b"x") == plain


def test_a_message_without_our_attributes_is_poison() -> None:
    with pytest.raises(PoisonMessage):
        record_of({"foo": "bar"}, b"{}")
    with pytest.raises(PoisonMessage):
        record_of({**attributes(LogRecord("p", "s", 1, 1, b"")), "gm-count": "x"}, b"")


def test_ordering_keys_name_partitions() -> None:
    assert [ordering_key(p) for p in range(3)] == ["p0", "p1", "p2"]


def test_publish_batches_respect_message_and_byte_limits() -> None:
    small = [LogRecord("p", "s", 1, 1, b"x" * 10) for _ in range(2500)]
    batches = publish_batches(small)
    assert [len(b) for b in batches] == [MAX_REQUEST_MESSAGES, MAX_REQUEST_MESSAGES, 500]
    big = [LogRecord("p", "s", 1, 1, b"x" * 4_000_000) for _ in range(5)]
    sizes = [sum(message_size(r) for r in b) for b in publish_batches(big)]
    assert [len(b) for b in publish_batches(big)] == [2, 2, 1]
    assert all(s <= 10_000_000 for s in sizes)
    with pytest.raises(ValueError, match="over Pub/Sub"):
        publish_batches([LogRecord("p", "s", 1, 1, b"x" * MAX_MESSAGE_BYTES)])
    assert publish_batches([]) == []


class ServiceUnavailable(Exception):  # named as google.api_core.exceptions names them
    pass


class NotFound(Exception):
    pass


class PermissionDenied(NotFound):
    pass


def test_errors_are_classified_by_their_grpc_names() -> None:
    assert classify(ServiceUnavailable("busy")) == "retry"
    assert classify(TimeoutError()) == "retry"
    assert classify(NotFound("no topic")) == "fatal"
    assert classify(PermissionDenied("no")) == "fatal"
    assert classify(ValueError("?")) == "unknown"


def test_data_is_the_body_except_binary_cloudevents() -> None:
    assert message_body(b'{"a":1}', {"ce-specversion": "1.0"}, "native") == b'{"a":1}'
    assert message_body(b"[]", {}, "cloudevents") == b"[]"
    attrs = {
        "ce-specversion": "1.0",
        "ce-id": "e-1",
        "ce-source": "/orders",
        "ce-type": "order_created",
        "ce-time": "2026-03-01T10:00:00Z",
        "content-type": "application/json",
        "googclient_schemaencoding": "JSON",  # Pub/Sub's own attributes stay out
    }
    event = orjson.loads(message_body(b'{"order_id":"o-1"}', attrs, "cloudevents"))
    assert event == {
        "specversion": "1.0",
        "id": "e-1",
        "source": "/orders",
        "type": "order_created",
        "time": "2026-03-01T10:00:00Z",
        "datacontenttype": "application/json",
        "data": {"order_id": "o-1"},
    }
    binary = {**attrs, "content-type": "application/octet-stream"}
    event = orjson.loads(message_body(b"\x00\x01", binary, "cloudevents"))
    assert base64.b64decode(event["data_base64"]) == b"\x00\x01"
    # Declared JSON that is not: the bytes go on as they came (and are quarantined).
    assert message_body(b"{oops", attrs, "cloudevents") == b"{oops"


def test_subscription_names() -> None:
    full = "projects/p1/subscriptions/s1"
    assert subscription_path(ConsumeSettings(broker="pubsub", subscription=full)) == full
    bare = ConsumeSettings(broker="pubsub", subscription="s1", project="p2")
    assert subscription_path(bare) == "projects/p2/subscriptions/s1"
    with pytest.raises(ValueError, match="needs --project"):
        subscription_path(ConsumeSettings(broker="pubsub", subscription="s1"))
    with pytest.raises(ValueError, match="not projects"):
        subscription_path(ConsumeSettings(broker="pubsub", subscription="projects/p/topics/t"))
    with pytest.raises(ValueError, match="--subscription"):
        subscription_path(ConsumeSettings(broker="pubsub"))


def test_drain_takes_what_is_there_up_to_the_limit() -> None:
    inbox: queue.Queue[int] = queue.Queue()
    for i in range(1, 10):
        inbox.put(i)
    assert drain(inbox, 0, 5, 0.0) == [0, 1, 2, 3, 4]
    assert drain(inbox, 0, 100, 0.0) == [0, 5, 6, 7, 8, 9]
    assert drain(inbox, 0, 100, 0.0) == [0]
