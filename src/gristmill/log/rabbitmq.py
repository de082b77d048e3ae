"""RabbitMQ as the log: one stream per partition, published with publisher confirms.

Why streams and not a quorum queue for the log: the loader must be able to re-read from the
offset the warehouse stored (a crash between the warehouse commit and the broker ack, a failed
batch). A stream is consumed non-destructively from any offset (``x-stream-offset``); a quorum
queue only redelivers unacked messages, in no guaranteed grouping, so a batch re-read after a
crash would differ from the committed one and its frames would be counted twice by
conservation. Quorum queues are what the consumers of *foreign* queues read (``consume/``);
both queue types use publisher confirms, and a confirmed stream message is replicated and
fsynced like a quorum-queue message.

* append: ``basic.publish`` on a confirm channel; aio-pika resolves the publish when the broker
  confirms it. Concurrent appends pipeline their confirms on one channel.
* offsets: the stream offset ``k`` of partition ``p`` becomes ``(k + 1) * partitions + p``.
* read: a consumer started at ``x-stream-offset``; moved when the loader asks for another
  position. Stream acks are flow-control credits, given on receipt.
* committed offsets: AMQP 0-9-1 has no server-side offset store for streams, so each commit is
  published to the small stream ``<stream>.offsets`` (group, partition, offset) and every
  process tails it, from its start when the process starts and past the last message it saw
  after a reconnect; collectors use it for the 503 cap.
* leases: an exclusive queue per (group, partition). RabbitMQ lets one connection declare it;
  when that connection dies (``kill -9`` closes its socket) the queue and the lease go away.
* a connection the broker closed (a restart, an operator, a protocol error) is opened again by
  the next call that needs it (:meth:`RabbitMQLog.channel`). Its leases went with it: the
  loader pool sees them lost, stops those partitions' loaders and leases them anew.
* stream acks are credits, and an ack the broker receives after the channel's close is a
  connection error ("expected 'channel.open'"): consumers give credit only while their
  channel is not being closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from aiormq.exceptions import ChannelLockedResource

from gristmill.config import RabbitMQLogSettings
from gristmill.log.base import LogEntry, LogRecord
from gristmill.log.broker import BrokerLog, PartitionReader, gather_all, record_from, record_headers

_OFFSET = "x-stream-offset"

log = logging.getLogger(__name__)


class RabbitMQLog(BrokerLog):
    name = "rabbitmq"

    def __init__(self, cfg: RabbitMQLogSettings) -> None:
        super().__init__(
            log_id=f"rabbitmq:{cfg.stream}",
            partitions=cfg.partitions,
            max_bytes=cfg.max_bytes,
            retry_after_s=cfg.retry_after_s,
            lease_ttl_s=cfg.lease_ttl_s,
        )
        self.cfg = cfg
        self._conn: AbstractRobustConnection | None = None
        self._pub: AbstractChannel | None = None
        self._commits: dict[tuple[str, int], int] = defaultdict(int)
        self._lease_channels: dict[tuple[str, int], AbstractChannel] = {}
        self._offsets_tag: str | None = None
        self._offsets_from: int | str = "first"
        """Where the offsets consumer starts: the whole stream in a new process, past the
        last commit message it saw after a reconnect (``_commits`` is kept across it)."""
        self.offsets_read = 0
        """Commit messages read from the offsets stream by this process."""
        self.offsets_last = -1
        """The stream offset of the last of them."""
        self._reopen = asyncio.Lock()
        self.start()

    def stream(self, partition: int) -> str:
        return f"{self.cfg.stream}.p{partition}"

    @property
    def offsets_stream(self) -> str:
        return f"{self.cfg.stream}.offsets"

    def to_offset(self, k: int, partition: int) -> int:
        return (k + 1) * self.partitions + partition

    def start_of(self, after: int) -> int:
        """The stream offset to start at for records past our offset ``after``."""
        return after // self.partitions

    @property
    def conn(self) -> AbstractRobustConnection:
        assert self._conn is not None, "not connected"
        return self._conn

    async def _declare(self, ch: AbstractChannel, name: str) -> AbstractQueue:
        return await ch.declare_queue(
            name,
            durable=True,
            arguments={"x-queue-type": "stream", "x-max-age": f"{int(self.cfg.retention_s)}s"},
        )

    async def _connect(self) -> None:
        # A plain connection, not a robust one: a robust connection would silently re-declare
        # an exclusive lease queue after a reconnect, while another loader may hold it.
        self._conn = await aio_pika.connect(  # type: ignore[assignment]
            self.cfg.url.get_secret_value(),
            timeout=10,
            client_properties={"connection_name": f"gristmill {self.log_id}"},
        )
        self._pub = await self.conn.channel(publisher_confirms=True)
        for p in range(self.partitions):
            await self._declare(self._pub, self.stream(p))
        await self._declare(self._pub, self.offsets_stream)
        ch = await self.conn.channel()
        await ch.set_qos(prefetch_count=1000)
        q = await ch.get_queue(self.offsets_stream, ensure=False)
        self._offsets_tag = await q.consume(
            self._on_commit, arguments={_OFFSET: self._offsets_from}
        )

    async def _ensure(self) -> None:
        """Reopen what the broker closed: the connection (with the streams, the publish
        channel and the offsets consumer), or only the publish channel. Leases held on a
        closed connection are gone on the broker too, so they are forgotten here."""
        if not self._down():
            return
        if self._closed:
            raise RuntimeError(f"{self.log_id}: the log is closed")
        async with self._reopen:  # one reconnect for every caller that found it closed
            if self._open():
                if self._pub is None or self._pub.is_closed:
                    self._pub = await self.conn.channel(publisher_confirms=True)
                return
            if self._conn is not None:
                log.warning("%s: the broker closed the connection; reconnecting", self.log_id)
                with contextlib.suppress(Exception):  # marks it closed; the socket is gone
                    await self._conn.close()
            self._lease_channels.clear()
            await self._connect()

    def _open(self) -> bool:
        """Whether the connection is up. A plain connection the broker closed is not marked
        ``is_closed`` (only ``close()`` does that); it clears ``connected``."""
        c = self._conn
        return c is not None and not c.is_closed and c.connected.is_set()

    def _down(self) -> bool:
        return not self._open() or self._pub is None or self._pub.is_closed

    async def channel(self, prefetch: int | None = None) -> AbstractChannel:
        """A new channel on the open connection (reopened first if the broker closed it)."""
        await self._ensure()
        ch = await self.conn.channel()
        if prefetch is not None:
            await ch.set_qos(prefetch_count=prefetch)
        return ch

    @property
    def pub(self) -> AbstractChannel:
        assert self._pub is not None, "not connected"
        return self._pub

    async def _on_commit(self, msg: AbstractIncomingMessage) -> None:
        h = msg.headers
        key = (str(h["group"]), int(str(h["partition"])))
        self._commits[key] = max(self._commits[key], int(str(h["offset"])))
        self.offsets_read += 1
        seen = h.get(_OFFSET)
        if isinstance(seen, int):
            self.offsets_last = seen
            self._offsets_from = seen + 1
        await msg.ack()

    async def _publish(self, partition: int, records: Sequence[LogRecord]) -> None:
        await self._ensure()
        ex = self.pub.default_exchange
        rk = self.stream(partition)
        await gather_all(
            [
                ex.publish(
                    aio_pika.Message(
                        r.body,
                        headers=record_headers(r),  # type: ignore[arg-type]
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=rk,
                )
                for r in records
            ]
        )

    async def _end(self, partition: int) -> int:
        """The newest offset: attach at ``last`` (the newest chunk) and read it through."""
        ch = await self.channel(prefetch=10_000)
        newest = -1
        got = asyncio.Event()
        done = False
        try:
            q = await ch.get_queue(self.stream(partition), ensure=False)

            async def on(msg: AbstractIncomingMessage) -> None:
                nonlocal newest
                newest = max(newest, int(str(msg.headers[_OFFSET])))
                got.set()
                if not done:
                    await msg.ack()

            tag = await q.consume(on, arguments={_OFFSET: "last"})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(got.wait(), 0.3)
            await asyncio.sleep(0.02)  # the rest of the chunk follows its first message
            await q.cancel(tag)
        finally:
            done = True
            await ch.close()
        return 0 if newest < 0 else self.to_offset(newest, partition)

    async def _committed(self, group: str, partition: int) -> int:
        return self._commits.get((group, partition), 0)

    async def _consume(self, partition: int, after: int) -> AsyncIterator[LogEntry]:
        end = await self._end(partition)
        if end <= after:
            return
        reader = _Reader(self, "scan", partition, prefetch=2000)
        try:
            last = after
            while last < end:
                entries = await reader.fetch(last, 1 << 30, 2.0)
                if not entries:
                    break  # retention removed what ``end`` promised
                for e in entries:
                    yield e
                last = entries[-1].offset
        finally:
            await reader.close()

    def reader(self, group: str, partition: int) -> PartitionReader:
        return _Reader(self, group, partition)

    async def _lease(self, group: str, partition: int) -> bool:
        ch = await self.channel()
        try:
            await ch.declare_queue(
                f"{self.cfg.stream}.lease.{group}.p{partition}", exclusive=True, auto_delete=True
            )
        except ChannelLockedResource:
            return False
        self._lease_channels[(group, partition)] = ch
        return True

    async def _lease_held(self, group: str, partition: int) -> bool:
        ch = self._lease_channels.get((group, partition))
        return ch is not None and not ch.is_closed and self._open()

    async def _release(self, group: str, partition: int) -> None:
        ch = self._lease_channels.pop((group, partition), None)
        if ch is not None and not ch.is_closed:
            with contextlib.suppress(Exception):
                await ch.queue_delete(f"{self.cfg.stream}.lease.{group}.p{partition}")
            await ch.close()

    async def publish_commit(self, group: str, partition: int, offset: int) -> None:
        await self._ensure()
        await self.pub.default_exchange.publish(
            aio_pika.Message(
                b"",
                headers={"group": group, "partition": partition, "offset": offset},
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=self.offsets_stream,
        )
        key = (group, partition)
        self._commits[key] = max(self._commits[key], offset)

    async def _close(self) -> None:
        if self._conn is not None and not self._conn.is_closed:
            await self._conn.close()


class _Reader(PartitionReader):
    def __init__(self, log: RabbitMQLog, group: str, partition: int, prefetch: int = 500) -> None:
        self.log = log
        self.group = group
        self.partition = partition
        self.prefetch = prefetch
        self._ch: AbstractChannel | None = None
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._buf: asyncio.Queue[LogEntry] = asyncio.Queue()
        self._at: int | None = None
        self._generation = 0
        self._closing = False

    async def _position(self, after: int) -> None:
        if self._ch is None or self._ch.is_closed:
            self._closing = False
            self._ch = await self.log.channel(prefetch=self.prefetch)
            self._queue = await self._ch.get_queue(self.log.stream(self.partition), ensure=False)
            self._tag = None  # a consumer of the old channel went with it
        assert self._queue is not None
        if self._tag is not None:
            await self._queue.cancel(self._tag)
        self._generation += 1
        self._buf = asyncio.Queue()
        generation, buf = self._generation, self._buf
        p = self.partition

        async def on(msg: AbstractIncomingMessage) -> None:
            if self._closing:
                return  # no credit on a channel being closed (see the module docstring)
            await msg.ack()  # credit only: a stream keeps the message
            if generation != self._generation:
                return  # delivered to a consumer that was since moved
            k = int(str(msg.headers[_OFFSET]))
            off = self.log.to_offset(k, p)
            if off > after:
                buf.put_nowait(LogEntry(off, record_from(dict(msg.headers), msg.body)))

        self._tag = await self._queue.consume(on, arguments={_OFFSET: self.log.start_of(after)})
        self._at = after

    async def fetch(self, after: int, max_events: int, timeout_s: float) -> list[LogEntry]:
        if self._at != after or self._ch is None or self._ch.is_closed:
            # A channel the broker closed delivers nothing more: start a new consumer rather
            # than wait on a buffer that can never fill.
            await self._position(after)
        out: list[LogEntry] = []
        events = 0
        buf = self._buf
        with contextlib.suppress(TimeoutError):
            # Wait a little even for timeout 0: deliveries of a consumer just (re)started are
            # in flight, and only the broker knows whether the stream ends here.
            first = await asyncio.wait_for(buf.get(), max(timeout_s, 0.05))
            out.append(first)
            events = first.record.count
        while not buf.empty():
            nxt = buf._queue[0]  # type: ignore[attr-defined]  # peek: stay under max_events
            if events + nxt.record.count > max_events:
                break
            out.append(buf.get_nowait())
            events += nxt.record.count
        if out:
            self._at = out[-1].offset
        return out

    async def commit(self, offset: int) -> None:
        await self.log.publish_commit(self.group, self.partition, offset)

    async def close(self) -> None:
        self._closing = True
        if self._ch is not None and not self._ch.is_closed:
            await self._ch.close()
