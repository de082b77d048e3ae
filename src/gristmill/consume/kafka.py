"""Kafka (confluent-kafka): a consumer group on an existing topic.

Offsets are committed by hand, synchronously, after the batch's frames are durable in the
log (``enable.auto.commit`` off). ``consume(num_messages=prefetch)`` bounds a batch and the
client's fetch queue is bounded too, so a slow log slows the fetching.
"""

from __future__ import annotations

import time
from typing import Any

from gristmill.config import ConsumeSettings
from gristmill.consume.base import Sink


def lag(consumer: Any) -> dict[str, int]:
    """topic -> messages past the consumer's position on its assigned partitions, from the
    client's cached high watermarks (no broker round trip). Partitions with no position yet
    (nothing fetched) or no cached watermark are left out."""
    out: dict[str, int] = {}
    for tp in consumer.position(consumer.assignment()):
        if tp.offset < 0:
            continue
        _low, high = consumer.get_watermark_offsets(tp, cached=True)
        if high is None or high < 0:
            continue
        out[tp.topic] = out.get(tp.topic, 0) + max(0, high - tp.offset)
    return out


def run(bootstrap: str, cfg: ConsumeSettings, sink: Sink) -> None:
    from confluent_kafka import Consumer, KafkaError, KafkaException

    if not cfg.subject:
        raise ValueError("kafka: set consume.subject to the topic")
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": cfg.durable,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "queued.max.messages.kbytes": 16384,
        }
    )
    try:
        sink.ready = False
        consumer.subscribe([cfg.subject], on_assign=lambda _c, _parts: sink.assigned())
        polled = 0.0
        while not sink.done():
            if cfg.metrics_port is not None and time.monotonic() - polled >= cfg.backlog_interval_s:
                polled = time.monotonic()
                sink.backlog.update(lag(consumer))
            msgs = consumer.consume(num_messages=cfg.prefetch, timeout=max(cfg.batch_wait_s, 0.25))
            bodies: list[bytes] = []
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise KafkaException(err)
                bodies.append(m.value() or b"")
            if not bodies:
                continue
            if not sink.durable(bodies):
                return  # stopped with the log full: offsets not committed, re-read later
            consumer.commit(asynchronous=False)
            sink.acked(len(bodies))
    finally:
        consumer.close()
