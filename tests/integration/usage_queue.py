"""Usage events on a RabbitMQ queue, as the seed's producers send them: one JSON message per
model call (the native event, request id as ``event_id``), published persistent to a durable
queue, some published twice or three times (a producer's retry), and poison messages among
them. Shared by the usage consumer tests; queues come from :func:`tests.brokers.scratch_queue`
so they are deleted at session end even if a test fails first."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from gristmill.demo.usage import Burst, UsageConfig, generate_usage
from gristmill.warehouse.base import Warehouse
from tests.brokers import RABBITMQ_URL
from tests.integration.usage_fixtures import spend_micros

UNDECODABLE = b'{"event_id": "req_broken", "event_type": "usage_recorded", \xff not json'
BAD_SCHEMA = orjson.dumps(
    {
        "event_id": "req_bad_schema",
        "event_type": "usage_recorded",
        "occurred_at": "2026-11-02T10:00:00Z",
        "properties": {
            "org_id": "org_000",
            "model": "gpt-4o",
            "provider": "openai",
            "tokens_in": -5,  # below the schema's minimum
            "tokens_out": 10,
            "latency_ms": 900,
            "status": "maybe",  # not in the enum
        },
    }
)
EMPTY = b""
POISON = {UNDECODABLE: "undecodable", BAD_SCHEMA: "schema_violation", EMPTY: "undecodable"}


@dataclass
class UsageMessages:
    bodies: list[bytes]
    """Every message in publish order: copies and poison included."""
    distinct: list[dict[str, Any]]
    """Each request once: what ``usage.usage_events`` must hold."""
    copies: int
    """Messages that repeat a request id already published."""

    @property
    def ids(self) -> set[str]:
        return {e["event_id"] for e in self.distinct}


def usage_messages(n: int, seed: int = 21, days: int = 3) -> UsageMessages:
    """``n`` distinct model calls over the last ``days`` days (error bursts included), ~3%
    re-sent once and every 250th three times, and the three poison messages spread in."""
    end = datetime.now(UTC)
    bursts = [Burst("org_000", "gpt-4o-mini", end - timedelta(hours=20), minutes=60, calls=200)]
    t = generate_usage(
        UsageConfig(
            events=n, days=days, orgs=6, seed=seed, end=end, bursts=bursts, duplicate_rate=0.03
        )
    )
    rng = random.Random(seed)
    bodies = [orjson.dumps(e) for e in t.events]
    copies = t.duplicates
    for i in range(0, len(t.distinct), 250):
        body = orjson.dumps(t.distinct[i])
        for _ in range(2):
            bodies.insert(rng.randrange(len(bodies) + 1), body)
            copies += 1
    for j, poison in enumerate(POISON):
        bodies.insert((j + 1) * len(bodies) // (len(POISON) + 1), poison)
    return UsageMessages(bodies, t.distinct, copies)


async def _publish(queue: str, bodies: list[bytes]) -> None:
    import aio_pika

    conn = await aio_pika.connect(RABBITMQ_URL)
    async with conn:
        ch = await conn.channel(publisher_confirms=True)
        await ch.declare_queue(queue, durable=True)
        for i in range(0, len(bodies), 500):
            await asyncio.gather(
                *(
                    ch.default_exchange.publish(
                        aio_pika.Message(
                            b,
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=queue,
                    )
                    for b in bodies[i : i + 500]
                )
            )


def publish(queue: str, bodies: list[bytes]) -> None:
    """Declare ``queue`` durable and publish every body to it, each confirmed by the broker."""
    asyncio.run(_publish(queue, bodies))


async def _depth(queue: str) -> int:
    import aio_pika

    conn = await aio_pika.connect(RABBITMQ_URL)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, passive=True)
        return int(q.declaration_result.message_count or 0)


def depth(queue: str) -> int:
    """Messages ready in the queue (a passive declare; unacknowledged ones not counted)."""
    return asyncio.run(_depth(queue))


async def _delete(queue: str) -> int:
    import aio_pika

    conn = await aio_pika.connect(RABBITMQ_URL)
    async with conn:
        ch = await conn.channel()
        q = await ch.declare_queue(queue, passive=True)
        left = int(q.declaration_result.message_count or 0)
        await q.delete(if_unused=False, if_empty=False)
        return left


def delete(queue: str) -> int:
    """Delete the queue; returns the messages it still held."""
    return asyncio.run(_delete(queue))


def check_exactly_once(wh: Warehouse, msgs: UsageMessages) -> None:
    """One row per request id, with plain SQL, and each org's requests and spend equal to plain
    Python over the distinct calls (spend from prices.yaml with Decimal arithmetic)."""
    twice = wh.query_sql(
        "SELECT event_id, count(*) AS n FROM usage.usage_events GROUP BY event_id "
        "HAVING count(*) > 1"
    ).to_pylist()
    assert twice == []
    ids = {str(v) for v in wh.query_sql("SELECT event_id FROM usage.usage_events").column(0)}
    assert ids == msgs.ids
    got = {
        r["org_id"]: (int(r["requests"]), int(r["spend"] or 0), int(r["unpriced"]))
        for r in wh.query_sql(
            "SELECT org_id, count(*) AS requests, sum(spend_micros) AS spend, "
            "sum(CASE WHEN spend_micros IS NULL THEN 1 ELSE 0 END) AS unpriced "
            "FROM usage.usage_events GROUP BY org_id"
        ).to_pylist()
    }
    want: dict[str, list[int]] = {}
    for e in msgs.distinct:
        row = want.setdefault(e["properties"]["org_id"], [0, 0, 0])
        row[0] += 1
        s = spend_micros(e["properties"], e["occurred_at"])
        if s is None:
            row[2] += 1
        else:
            row[1] += s
    assert got == {k: tuple(v) for k, v in want.items()}, (got, want)


def check_quarantine(wh: Warehouse) -> None:
    """Every poison message in quarantine with its exact bytes and reason (a redelivered one
    may be there twice: it was appended twice)."""
    rows = wh.query_sql("SELECT reason, raw FROM _gristmill.quarantine").to_pylist()
    got = {(r["reason"], bytes(r["raw"])) for r in rows}
    assert got == {(reason, raw) for raw, reason in POISON.items()}
