"""Prometheus text for ``gristmill consume --metrics-port``.

A consumer is its own process with no HTTP API, so it serves its own small endpoint
(loopback by default): how much it acknowledged and sent to quarantine, what waits in the
broker, and whether it is paused because the log is at its cap.

Backlog per broker (``gristmill_consumer_backlog_messages{queue}``), polled every
``backlog_interval_s`` by the consume loop itself, never at scrape time:

- RabbitMQ: a passive ``queue.declare`` of the consumed queue; its message count (ready
  messages, not the ones delivered and awaiting our ack).
- NATS JetStream: the durable consumer's ``num_pending`` (messages in the stream it has not
  been delivered yet).
- Kafka: per assigned partition, the high watermark the client last fetched minus the
  consumer's position, summed per topic. Both are local to the client (no broker round
  trip); a partition not fetched from yet has no position and is not counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from gristmill.consume.base import Sink


class ConsumerCollector(Collector):
    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    def collect(self) -> Iterator[Metric]:
        st = self.sink.stats
        yield CounterMetricFamily(
            "gristmill_consumer_acked",
            "Messages acknowledged after their frames were durable in the log.",
            value=st.acked,
        )
        yield CounterMetricFamily(
            "gristmill_consumer_quarantined",
            "Items of acknowledged messages that go to quarantine (unreadable, invalid).",
            value=st.quarantined,
        )
        backlog = GaugeMetricFamily(
            "gristmill_consumer_backlog_messages",
            "Messages waiting in the broker for this consumer, as last polled.",
            labels=["queue"],
        )
        for queue, n in sorted(dict(self.sink.backlog).items()):
            backlog.add_metric([queue], n)
        yield backlog
        yield GaugeMetricFamily(
            "gristmill_consumer_paused",
            "1 while the log is at its cap and acknowledgements are withheld.",
            value=1 if self.sink.paused else 0,
        )


def registry(sink: Sink) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ConsumerCollector(sink))
    return reg


def serve(sink: Sink, host: str, port: int) -> WSGIServer:
    """Start the endpoint in a daemon thread; :func:`stop` ends it. Port 0 picks a free port
    (``server.server_address``)."""
    from prometheus_client import start_http_server

    server, _thread = start_http_server(port, addr=host, registry=registry(sink))
    return server


def stop(server: WSGIServer) -> None:
    server.shutdown()
    server.server_close()
