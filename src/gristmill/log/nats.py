"""NATS JetStream as the log: one file-backed stream, one subject per partition.

* append: ``js.publish`` returns the PubAck, i.e. the stream stored (and, with replicas, the
  quorum acknowledged) the message. Its stream sequence is the offset — already unique across
  partitions and increasing within one.
* read: a durable pull consumer per (group, partition) with ``AckPolicy.ALL``: acking offset
  N acknowledges everything before it, which is what a loader's commit means. The loader acks
  only after the warehouse commit. When the loader asks for records after an offset the
  consumer is not at (a restart from the warehouse's offset, a failed batch), the consumer is
  recreated at that offset + 1: the warehouse's offset decides, not JetStream's redelivery.
* leases: a key per (group, partition) in a KV bucket whose entries expire after
  ``lease_ttl_s``; the holder renews it. A killed loader's lease frees itself.
* committed offset and depth: the consumer's ack floor and the subject's last sequence,
  readable by any process (collectors use them for the 503 cap).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeout
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError
from nats.js.kv import KeyValue

from gristmill.config import NATSLogSettings
from gristmill.log.base import LogEntry, LogRecord
from gristmill.log.broker import BrokerLog, PartitionReader, gather_all, record_from, record_headers


def _safe(name: str) -> str:
    """Consumer names allow no dots."""
    return name.replace(".", "_")


class NATSLog(BrokerLog):
    name = "nats"

    def __init__(self, cfg: NATSLogSettings) -> None:
        super().__init__(
            log_id=f"nats:{cfg.stream}",
            partitions=cfg.partitions,
            max_bytes=cfg.max_bytes,
            retry_after_s=cfg.retry_after_s,
            lease_ttl_s=cfg.lease_ttl_s,
        )
        self.cfg = cfg
        self.stream = cfg.stream
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._kv: KeyValue | None = None
        self._leases: dict[tuple[str, int], int] = {}
        self._holder = f"{socket.gethostname()}:{os.getpid()}"
        self.start()

    def subject(self, partition: int) -> str:
        return f"{self.stream}.p{partition}"

    @property
    def js(self) -> JetStreamContext:
        assert self._js is not None, "not connected"
        return self._js

    @property
    def _stride(self) -> int:
        return 1  # a subject's sequences are spread over the stream: count pending instead

    async def _connect(self) -> None:
        self._nc = await nats.connect(
            self.cfg.url.get_secret_value(), connect_timeout=5, max_reconnect_attempts=-1
        )
        self._js = self._nc.jetstream(timeout=10)
        config = StreamConfig(
            name=self.stream,
            subjects=[f"{self.stream}.>"],
            storage=StorageType.FILE,
            max_age=self.cfg.retention_s,
            num_replicas=self.cfg.replicas,
        )
        try:
            await self._js.stream_info(self.stream)
        except NotFoundError:
            with contextlib.suppress(Exception):  # a concurrent creator won the race
                await self._js.add_stream(config)
        bucket = f"{self.stream}_leases"
        try:
            self._kv = await self._js.key_value(bucket)  # the first process set its TTL
        except NotFoundError:
            try:
                self._kv = await self._js.create_key_value(bucket=bucket, ttl=self.cfg.lease_ttl_s)
            except Exception:  # a concurrent creator won the race
                self._kv = await self._js.key_value(bucket)

    async def _publish(self, partition: int, records: Sequence[LogRecord]) -> None:
        subject = self.subject(partition)
        await gather_all(
            [self.js.publish(subject, r.body, headers=record_headers(r)) for r in records]
        )

    async def _end(self, partition: int) -> int:
        try:
            msg = await self.js.get_last_msg(self.stream, self.subject(partition))
        except NotFoundError:
            return 0
        return int(msg.seq or 0)

    async def _committed(self, group: str, partition: int) -> int:
        try:
            info = await self.js.consumer_info(self.stream, _safe(group))
        except NotFoundError:
            return 0
        return int(info.ack_floor.stream_seq if info.ack_floor else 0)

    async def _estimate_depth_bytes(self) -> int:
        records = 0
        for p in range(self.partitions):
            group = _safe(f"{self.cap_group}.p{p}")
            try:
                info = await self.js.consumer_info(self.stream, group)
                records += int(info.num_pending or 0) + int(info.num_ack_pending or 0)
            except NotFoundError:
                state = await self.js.stream_info(self.stream, subjects_filter=self.subject(p))
                records += int((state.state.subjects or {}).get(self.subject(p), 0))
        return int(records * self._mean_bytes)

    async def _consume(self, partition: int, after: int) -> AsyncIterator[LogEntry]:
        end = await self._end(partition)
        if end <= after:
            return
        sub = await self.js.pull_subscribe(
            self.subject(partition),
            durable=None,
            stream=self.stream,
            config=ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=after + 1,
                ack_policy=AckPolicy.NONE,
                inactive_threshold=30.0,
            ),
        )
        try:
            last = after
            while last < end:
                try:
                    msgs = await sub.fetch(1000, timeout=2)
                except (NatsTimeout, TimeoutError):
                    break  # the retained stream ends before ``end`` (age limit)
                for m in msgs:
                    last = m.metadata.sequence.stream
                    yield LogEntry(last, record_from(dict(m.headers or {}), m.data))
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    def reader(self, group: str, partition: int) -> PartitionReader:
        return _Reader(self, group, partition)

    # -- leases -----------------------------------------------------------------------------
    @property
    def kv(self) -> KeyValue:
        assert self._kv is not None, "not connected"
        return self._kv

    async def _lease(self, group: str, partition: int) -> bool:
        key = f"{group}.p{partition}"
        # Ours as far as this process knows: renewed in the bucket, not taken from the cache
        # (a lease lost while the broker was unreachable is still cached).
        if (group, partition) in self._leases and await self._lease_held(group, partition):
            return True
        try:
            rev = await self.kv.create(key, self._holder.encode())
        except KeyWrongLastSequenceError:
            return False
        self._leases[(group, partition)] = rev
        return True

    async def _lease_held(self, group: str, partition: int) -> bool:
        rev = self._leases.get((group, partition))
        if rev is None:
            return False
        try:
            self._leases[(group, partition)] = await self.kv.update(
                f"{group}.p{partition}", self._holder.encode(), last=rev
            )
        except KeyWrongLastSequenceError:
            self._leases.pop((group, partition), None)
            return False
        return True

    async def _release(self, group: str, partition: int) -> None:
        rev = self._leases.pop((group, partition), None)
        if rev is not None:
            with contextlib.suppress(Exception):
                await self.kv.delete(f"{group}.p{partition}", last=rev)

    async def _close(self) -> None:
        for group, partition in list(self._leases):
            await self._release(group, partition)
        if self._nc is not None:
            await self._nc.close()


class _Reader(PartitionReader):
    """A durable pull consumer positioned by the loader."""

    def __init__(self, log: NATSLog, group: str, partition: int) -> None:
        self.log = log
        self.durable = _safe(group)
        self.partition = partition
        self._sub: Any = None
        self._at: int | None = None
        """Offset of the last record handed out (the consumer continues after it)."""
        self._held: dict[int, Any] = {}
        self._buf: list[tuple[LogEntry, Any]] = []
        """Delivered by JetStream, not yet handed to the loader (over its batch size)."""

    async def _position(self, after: int) -> None:
        js = self.log.js
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        with contextlib.suppress(NotFoundError):
            await js.delete_consumer(self.log.stream, self.durable)
        await js.add_consumer(
            self.log.stream,
            ConsumerConfig(
                durable_name=self.durable,
                filter_subject=self.log.subject(self.partition),
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
                opt_start_seq=after + 1,
                ack_policy=AckPolicy.ALL,
                ack_wait=3600.0,
                max_ack_pending=-1,
            ),
        )
        self._sub = await js.pull_subscribe_bind(self.durable, self.log.stream)
        self._held.clear()
        self._buf.clear()
        self._at = after

    async def fetch(self, after: int, max_events: int, timeout_s: float) -> list[LogEntry]:
        if self._at != after:
            await self._position(after)
        out: list[LogEntry] = []
        events = 0
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        fetched = False
        while True:
            while self._buf:
                entry, msg = self._buf[0]
                if out and events + entry.record.count > max_events:
                    return out
                self._buf.pop(0)
                out.append(entry)
                events += entry.record.count
                self._held[entry.offset] = msg
                self._at = entry.offset
            if out or (fetched and loop.time() >= deadline):
                return out
            try:
                # At least one round trip, even for timeout 0: only the server knows the end.
                msgs = await self._sub.fetch(256, timeout=max(0.05, deadline - loop.time()))
            except (NatsTimeout, TimeoutError):
                msgs = []
            fetched = True
            for m in msgs:
                seq = m.metadata.sequence.stream
                if seq > after:
                    self._buf.append((LogEntry(seq, record_from(dict(m.headers or {}), m.data)), m))

    async def commit(self, offset: int) -> None:
        msg = self._held.get(offset)
        if msg is None:
            # Not delivered to this consumer (a restart committing the warehouse's offset):
            # recreate it there, which moves its ack floor.
            if self._at is None or offset > self._at:
                await self._position(offset)
            return
        await msg.ack_sync()
        for seq in [s for s in self._held if s <= offset]:
            del self._held[seq]

    async def close(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
