"""Google Cloud Pub/Sub (``google-cloud-pubsub``): pull an existing subscription.

The client's streaming pull delivers messages to a callback; flow control
(``max_messages = prefetch``) stops delivery while that many are held unacknowledged — the
backpressure: when the log is full the batch in hand waits, nothing is acknowledged, and the
client keeps extending the held messages' deadlines instead of letting them expire. A batch
(up to ``prefetch`` messages, or what arrived within ``batch_wait_s``) is framed, appended
durably, and only then acknowledged. An unreadable message becomes a quarantine frame with its
original bytes (:mod:`gristmill.consume.base`) and is acknowledged like any other.

Message → request body: the data as it is, except CloudEvents in Pub/Sub's *binary* content
mode (the event's attributes as ``ce-*`` message attributes, its data as the message data),
which becomes one structured CloudEvent, as the ``cloudevents`` dialect reads it.
"""

from __future__ import annotations

import base64
import queue
import time
from collections.abc import Mapping
from typing import Any

import orjson

from gristmill.config import ConsumeSettings
from gristmill.consume.base import Sink

CE_PREFIX = "ce-"


def subscription_path(cfg: ConsumeSettings) -> str:
    """``projects/<p>/subscriptions/<s>`` from a full path, or a bare name and ``project``."""
    sub = cfg.subscription
    if not sub:
        raise ValueError("pubsub: set --subscription (or GRISTMILL_CONSUME__SUBSCRIPTION)")
    if sub.startswith("projects/"):
        parts = sub.split("/")
        if len(parts) != 4 or parts[2] != "subscriptions" or not parts[1] or not parts[3]:
            raise ValueError(f"pubsub: {sub!r} is not projects/<project>/subscriptions/<name>")
        return sub
    if not cfg.project:
        raise ValueError("pubsub: a bare subscription name needs --project (or PUBSUB_PROJECT_ID)")
    return f"projects/{cfg.project}/subscriptions/{sub}"


def message_body(data: bytes, attributes: Mapping[str, str], dialect: str) -> bytes:
    """The request body one message stands for in ``dialect``."""
    if dialect != "cloudevents" or f"{CE_PREFIX}specversion" not in attributes:
        return data
    event: dict[str, Any] = {
        k[len(CE_PREFIX) :]: v for k, v in attributes.items() if k.startswith(CE_PREFIX)
    }
    content_type = attributes.get("content-type") or attributes.get("Content-Type")
    if content_type is not None:
        event["datacontenttype"] = content_type
    if data:
        if content_type is None or "json" in content_type:
            try:
                event["data"] = orjson.loads(data)
            except orjson.JSONDecodeError:
                return data  # neither JSON nor declared otherwise: quarantined as it came
        else:
            event["data_base64"] = base64.b64encode(data).decode()
    return orjson.dumps(event)


def drain(inbox: queue.Queue[Any], first: Any, limit: int, wait_s: float) -> list[Any]:
    """``first`` and whatever else arrives within ``wait_s``, at most ``limit`` messages."""
    out = [first]
    deadline = time.monotonic() + wait_s
    while len(out) < limit:
        left = deadline - time.monotonic()
        try:
            out.append(inbox.get(timeout=max(left, 0)) if left > 0 else inbox.get_nowait())
        except queue.Empty:
            break
    return out


def _raise_stream_error(path: str, future: Any) -> None:
    """The streaming pull ended. A missing subscription or permission (``fatal``) is the
    operator's to fix and is said so; anything else is raised as it came (the caller's
    supervisor restarts a consumer whose service hiccuped)."""
    from gristmill.log.pubsub import classify

    try:
        future.result()
    except Exception as exc:
        if classify(exc) == "fatal":
            raise ValueError(f"pubsub: {path}: {type(exc).__name__}: {exc}") from exc
        raise
    raise RuntimeError(f"pubsub: the stream of {path} ended")


def run(cfg: ConsumeSettings, sink: Sink) -> None:
    from google.cloud import pubsub_v1

    path = subscription_path(cfg)
    inbox: queue.Queue[Any] = queue.Queue()
    subscriber = pubsub_v1.SubscriberClient()
    flow = pubsub_v1.types.FlowControl(max_messages=cfg.prefetch)
    future = subscriber.subscribe(path, callback=inbox.put, flow_control=flow)
    try:
        while not sink.done():
            if future.done():
                _raise_stream_error(path, future)
            try:
                first = inbox.get(timeout=0.25)
            except queue.Empty:
                continue
            msgs = drain(inbox, first, cfg.prefetch, cfg.batch_wait_s)
            bodies = [message_body(bytes(m.data), m.attributes, cfg.dialect) for m in msgs]
            if not sink.durable(bodies):
                for m in msgs:
                    m.nack()  # stopped with the log full: redelivered later
                return
            for m in msgs:
                m.ack()
            sink.acked(len(msgs))
    finally:
        future.cancel()
        subscriber.close()
