"""``gristmill consume``: load JSON events from an existing RabbitMQ queue or exchange, NATS
JetStream stream, Kafka topic or Google Cloud Pub/Sub subscription."""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import ExitStack
from typing import Annotated

import typer
from pydantic import SecretStr

from gristmill.cli.common import DataDirOpt, PacksOpt, fail, make_settings, stop_on_signals
from gristmill.consume import ConsumeStats, open_consumer
from gristmill.consume import metrics as consumer_metrics


def consume(
    broker: Annotated[str, typer.Argument(help="rabbitmq, nats, kafka or pubsub.")],
    data_dir: DataDirOpt = None,
    pack: PacksOpt = None,
    url: Annotated[
        str | None,
        typer.Option(help="amqp://…, nats://… or Kafka host:port.", show_default=False),
    ] = None,
    queue: Annotated[str | None, typer.Option(help="RabbitMQ queue.", show_default=False)] = None,
    exchange: Annotated[
        str | None, typer.Option(help="RabbitMQ exchange to bind the queue to.", show_default=False)
    ] = None,
    routing_key: Annotated[str | None, typer.Option(help="RabbitMQ binding key.")] = None,
    stream: Annotated[str | None, typer.Option(help="NATS stream.", show_default=False)] = None,
    subject: Annotated[
        str | None, typer.Option(help="NATS subject filter or Kafka topic.", show_default=False)
    ] = None,
    durable: Annotated[
        str | None, typer.Option(help="NATS durable name / Kafka group.", show_default=False)
    ] = None,
    subscription: Annotated[
        str | None,
        typer.Option(
            help="Pub/Sub subscription: projects/<p>/subscriptions/<s>, or a name with --project.",
            show_default=False,
        ),
    ] = None,
    project: Annotated[
        str | None, typer.Option(help="Pub/Sub project of a bare subscription name.")
    ] = None,
    source: Annotated[str | None, typer.Option(help="Source name (default queue).")] = None,
    dialect: Annotated[str | None, typer.Option(help="Message dialect (default native).")] = None,
    prefetch: Annotated[int | None, typer.Option(help="Unacknowledged messages at most.")] = None,
    max_idle: Annotated[
        float | None,
        typer.Option(help="Exit after this many seconds without a message.", show_default=False),
    ] = None,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            help="Serve Prometheus metrics (gristmill_consumer_*) on this port.",
            show_default=False,
        ),
    ] = None,
    metrics_host: Annotated[
        str | None, typer.Option(help="Address the metrics server binds (default 127.0.0.1).")
    ] = None,
) -> None:
    """Consume until interrupted (SIGINT/SIGTERM finish the batch in hand, then exit)."""
    settings = make_settings(data_dir, pack)
    given = {
        "broker": broker,
        "url": SecretStr(url) if url else None,
        "queue": queue,
        "exchange": exchange,
        "routing_key": routing_key,
        "stream": stream,
        "subject": subject,
        "durable": durable,
        "subscription": subscription,
        "project": project or (os.environ.get("PUBSUB_PROJECT_ID") if broker == "pubsub" else None),
        "source": source,
        "dialect": dialect,
        "prefetch": prefetch,
        "metrics_port": metrics_port,
        "metrics_host": metrics_host,
    }
    try:
        settings.consume = type(settings.consume).model_validate(
            {
                **settings.consume.model_dump(),
                **{k: v for k, v in given.items() if v is not None},
            }
        )
    except ValueError as exc:
        fail(str(exc))
    stop = threading.Event()
    stop_on_signals(stop)
    started = time.monotonic()
    last = {"t": 0.0}

    def progress(st: ConsumeStats) -> None:
        if st.paused:
            # Printed at every wait (one per retry_after_s): a stalled consumer says why.
            print(
                f"consume {broker}: paused for {time.monotonic() - (st.paused_since or 0):.0f} s, "
                f"{st.held} messages held unacknowledged: {st.log_full} (waiting for the "
                "loader)",
                file=sys.stderr,
                flush=True,
            )
            return
        if time.monotonic() - last["t"] >= 1.0:
            last["t"] = time.monotonic()
            print(
                f"consume {broker}: {st.acked} messages acknowledged ({st.rate():.0f}/s)",
                file=sys.stderr,
                flush=True,
            )

    with ExitStack() as stack:
        try:
            consumer = open_consumer(
                settings, stack, stop=stop, max_idle_s=max_idle, on_progress=progress
            )
            cfg = settings.consume
            if cfg.metrics_port is not None:
                server = consumer_metrics.serve(consumer.sink, cfg.metrics_host, cfg.metrics_port)
                stack.callback(consumer_metrics.stop, server)
                print(
                    f"consume {broker}: metrics on "
                    f"http://{cfg.metrics_host}:{server.server_port}/metrics",
                    file=sys.stderr,
                    flush=True,
                )
            print(f"consume {broker}: started", file=sys.stderr, flush=True)
            st = consumer.run()
        except (ValueError, ImportError, OSError) as exc:
            fail(str(exc))
    took = time.monotonic() - started
    print(
        f"consume {broker}: stopped; {st.acked} messages acknowledged in {st.batches} batches "
        f"({st.acked / max(took, 1e-9):.0f}/s)",
        file=sys.stderr,
        flush=True,
    )
