"""Pub/Sub against a real service (the emulator here; see tests/pubsub_emulator.py): the log
driver (publish with ordering keys, pull, replay before the ack, ack after the warehouse
commit), a whole run configured by seed 002's names (``EVENT_BUS_DRIVER=pubsub`` …), and
``gristmill consume pubsub`` with a poison message quarantined with its bytes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import orjson
import pytest

from gristmill.config import ConsumeSettings, PubSubLogSettings
from gristmill.consume import open_consumer
from gristmill.log.base import LogRecord
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.factories import order
from tests.pubsub_emulator import pubsub_service


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with pubsub_service(tmp_path_factory.mktemp("pubsub")) as p:
        yield p


def _topic() -> str:
    return f"gmtest-{uuid.uuid4().hex[:10]}"


def test_log_pull_replay_and_ack_after_commit(project: str) -> None:
    from gristmill.log.pubsub import PubSubLog

    log = PubSubLog(PubSubLogSettings(type="pubsub", project=project, topic=_topic()))
    try:
        log.subscription_path("loader")  # exists before the first publish
        log.append(
            [
                LogRecord("marketplace", "web", 2, 10, b"a"),
                LogRecord("marketplace", "web", 1, 11, b"b"),
            ]
        )
        log.append([LogRecord("marketplace", "app", 1, 12, b"c")])
        first = log.read("loader", 100, 10, after=40)
        assert sorted(e.record.body for e in first.entries) == [b"a", b"b", b"c"]
        assert [e.offset for e in first.entries] == [41, 42, 43]  # past the warehouse's offset
        # A loader whose load failed reads again from the warehouse's offset: same numbers.
        again = log.read("loader", 100, 10, after=40)
        assert [(e.offset, e.record) for e in again.entries] == [
            (e.offset, e.record) for e in first.entries
        ]
        snap = log.snapshot("loader", after_offset=40)
        assert snap.pending == {("marketplace", "web"): 3, ("marketplace", "app"): 1}
        log.commit("loader", 43)
        assert log.committed("loader") == 43
        assert log.read("loader", 100, 2, after=43).entries == []
        assert log.snapshot("loader").pending == {}
        assert log.check_ready() == []
    finally:
        log.close()


def test_one_ordering_key_keeps_publish_order(project: str) -> None:
    from gristmill.log.pubsub import PubSubLog

    log = PubSubLog(PubSubLogSettings(type="pubsub", project=project, topic=_topic(), partitions=1))
    try:
        log.subscription_path("loader")
        for i in range(30):
            log.append([LogRecord("marketplace", "web", 1, i, str(i).encode())])
        got: list[bytes] = []
        after = 0
        for _ in range(15):  # a pull may come back empty or short; bounded, not timed
            batch = log.read("loader", 7, 3, after=after)
            if batch.entries:
                got += [e.record.body for e in batch.entries]
                after = batch.last_offset
                log.commit("loader", after)
            if len(got) >= 30:
                break
        assert got == [str(i).encode() for i in range(30)]
    finally:
        log.close()


def test_seed_names_drive_a_pubsub_run(
    project: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVENT_BUS_DRIVER", "pubsub")
    monkeypatch.setenv("EVENT_BUS_PUBSUB_TOPIC", _topic())
    monkeypatch.setenv("PUBSUB_PROJECT_ID", project)
    monkeypatch.setenv("EVENT_SINK_BATCH_SIZE", "40")
    settings = make_settings(tmp_path / "data")
    assert settings.log.type == "pubsub"
    rt = Runtime(settings)
    try:
        assert rt.log.name == "pubsub"
        rt.log.subscription_path("loader")  # type: ignore[attr-defined]
        events = [order(event_id=f"ps-{i}", amount=100 + i) for i in range(100)]
        p = rt.collector.prepare(
            pack="marketplace", source="backend", dialect="native", raw=orjson.dumps(events)
        )
        rt.collector.submit_sync(p)
        for _ in range(20):  # pulls may come back short; each round loads what arrived
            rt.loader.drain()
            n = rt.warehouse.query_sql(
                "SELECT count(*) AS n FROM marketplace.marketplace_events"
            ).to_pylist()[0]["n"]
            if n == 100:
                break
        assert n == 100
        c = rt.conservation()
        assert c.total("loaded") == 100
        assert c.total("in_flight") == 0
        assert c.balanced, c.as_dict()
    finally:
        rt.stop()


def test_consume_pubsub_acks_after_append_and_quarantines_poison(
    project: str, tmp_path: Path
) -> None:
    from google.cloud import pubsub_v1

    topic, sub = _topic(), f"sub-{uuid.uuid4().hex[:8]}"
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path(project, topic)
    sub_path = subscriber.subscription_path(project, sub)
    publisher.create_topic(name=topic_path)
    subscriber.create_subscription(request={"name": sub_path, "topic": topic_path})
    valid = [order(event_id=f"c-{i}") for i in range(20)]
    poison = b'{"event_id": "broken", \xff not json'
    futures = [publisher.publish(topic_path, orjson.dumps(e)) for e in valid]
    futures.append(publisher.publish(topic_path, poison))
    for f in futures:
        f.result(timeout=30)
    settings = make_settings(
        tmp_path / "data",
        consume=ConsumeSettings(
            broker="pubsub", subscription=sub, project=project, prefetch=8, source="ps"
        ),
    )
    with ExitStack() as stack:
        stats = open_consumer(settings, stack, max_idle_s=3.0).run()
    assert stats.acked == 21
    assert stats.max_batch <= 8  # flow control: never more than prefetch in hand
    # Everything was acknowledged: nothing is left to pull.
    left = subscriber.pull(request={"subscription": sub_path, "max_messages": 10}, timeout=5)
    assert list(left.received_messages) == []
    rt = Runtime(settings)
    try:
        rt.loader.drain()
        ids = rt.warehouse.query_sql("SELECT event_id FROM marketplace.marketplace_events").column(
            "event_id"
        )
        assert sorted(map(str, ids.to_pylist())) == sorted(e["event_id"] for e in valid)
        q = rt.warehouse.query_sql("SELECT reason, raw FROM _gristmill.quarantine").to_pylist()
        assert [(r["reason"], bytes(r["raw"])) for r in q] == [("undecodable", poison)]
    finally:
        rt.stop()
        subscriber.close()


def test_consume_a_missing_subscription_says_so(project: str, tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path / "data",
        consume=ConsumeSettings(broker="pubsub", subscription="no-such-sub", project=project),
    )
    with ExitStack() as stack, pytest.raises(ValueError, match="no-such-sub: NotFound"):
        open_consumer(settings, stack, max_idle_s=20.0).run()


def test_a_loader_that_died_before_its_ack_leaves_duplicates_not_doubles(
    project: str, tmp_path: Path
) -> None:
    """The loader commits to the warehouse and dies before acknowledging: Pub/Sub redelivers
    after the ack deadline to the next loader (a new process: new numbers), and the dedupe
    keys make every redelivered event a duplicate — loaded once, counted twice."""
    from gristmill.load.loader import Loader
    from gristmill.log.pubsub import PubSubLog
    from gristmill.rollup.maintain import after_insert

    topic = _topic()
    cfg = {"type": "pubsub", "project": project, "topic": topic, "ack_deadline_s": 10}
    settings = make_settings(tmp_path / "data", log=cfg)
    rt = Runtime(settings)
    try:
        rt.log.subscription_path("loader")  # type: ignore[attr-defined]
        events = [order(event_id=f"re-{i}") for i in range(20)]
        p = rt.collector.prepare(
            pack="marketplace", source="backend", dialect="native", raw=orjson.dumps(events)
        )
        rt.collector.submit_sync(p)
        # The first loader's acknowledgements never happen (it dies right after the commit).
        rt.log.commit = lambda group, offset: None  # type: ignore[method-assign]
        for _ in range(10):
            rt.loader.drain()
            if (
                rt.warehouse.ledger(rt.log.log_id, "loader").loaded.get(
                    ("marketplace", "backend"), 0
                )
                == 20
            ):
                break
        second_log = PubSubLog(PubSubLogSettings.model_validate(cfg))
        second = Loader(
            second_log,
            rt.warehouse,
            rt.packs,
            settings.loader,
            after=after_insert(rt.packs, rt.warehouse.dialect),
        )
        try:
            give_up = time.monotonic() + 90  # redelivery comes after the 10 s deadline
            while True:
                second.drain()
                ledger = rt.warehouse.ledger(rt.log.log_id, "loader")
                done = ledger.duplicates.get(("marketplace", "backend"), 0) >= 20
                if done or time.monotonic() > give_up:
                    break
                time.sleep(0.5)
        finally:
            second_log.close()
        assert ledger.loaded == {("marketplace", "backend"): 20}
        assert ledger.duplicates == {("marketplace", "backend"): 20}
        n = rt.warehouse.query_sql(
            "SELECT count(DISTINCT event_id) AS d, count(*) AS n "
            "FROM marketplace.marketplace_events"
        ).to_pylist()[0]
        assert (n["d"], n["n"]) == (20, 20)
    finally:
        rt.stop()
