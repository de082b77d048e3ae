"""The loader's crash windows: every interleaving of warehouse commit and log commit."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from sqlglot import exp

from gristmill.config import Settings
from gristmill.load.loader import Loader
from gristmill.load.pressure import CpuMeter
from gristmill.runtime import Runtime
from gristmill.sql.ddl import table_ref
from gristmill.warehouse.base import LoadResult
from tests.factories import order


def ingest(rt: Runtime, events: list[dict[str, object]], source: str = "web") -> None:
    p = rt.collector.prepare(
        pack="marketplace", source=source, dialect="native", raw=orjson.dumps(events)
    )
    rt.collector.submit_sync(p)


def rows(rt: Runtime) -> int:
    q = exp.select(exp.func("count", exp.Star()).as_("n")).from_(
        table_ref("marketplace", "marketplace_events")
    )
    return int(rt.warehouse.query(q).to_pylist()[0]["n"])


def test_crash_after_warehouse_commit_before_log_commit(settings: Settings) -> None:
    rt = Runtime(settings)
    ingest(rt, [order() for _ in range(10)])
    # Simulate the crash: the log's commit never happens.
    real_commit = rt.log.commit
    rt.log.commit = lambda group, offset: None  # type: ignore[method-assign]
    rt.loader.run_once(timeout_s=0)
    rt.log.commit = real_commit  # type: ignore[method-assign]
    assert rows(rt) == 10
    assert rt.log.committed("loader") == 0  # the log still holds the batch
    # A new loader (a restarted process) starts from the warehouse's offset.
    fresh = Loader(rt.log, rt.warehouse, rt.packs, settings.loader)
    assert fresh.run_once(timeout_s=0) is None
    assert rows(rt) == 10
    assert rt.log.committed("loader") > 0  # and catches the log up
    c = rt.conservation()
    assert c.balanced
    assert c.total("loaded") == 10
    assert c.total("in_flight") == 0
    rt.stop()


def test_crash_before_warehouse_commit_reloads_everything(settings: Settings) -> None:
    rt = Runtime(settings)
    ingest(rt, [order() for _ in range(10)])

    def boom(batch: object) -> None:
        raise RuntimeError("power cut")

    real = rt.warehouse.commit_load
    rt.warehouse.commit_load = boom  # type: ignore[method-assign,assignment]
    with pytest.raises(RuntimeError):
        rt.loader.run_once(timeout_s=0)
    rt.warehouse.commit_load = real  # type: ignore[method-assign]
    assert rows(rt) == 0
    assert rt.conservation().total("in_flight") == 10
    Loader(rt.log, rt.warehouse, rt.packs, settings.loader).drain()
    assert rows(rt) == 10
    assert rt.conservation().balanced
    rt.stop()


def small_batches(settings: Settings, requests: int, tag: str) -> Runtime:
    """A runtime whose log holds ``requests`` requests of 10 orders, loaded 10 at a time."""
    settings.loader.max_events = 10
    settings.loader.target_events = 10
    rt = Runtime(settings)
    for i in range(requests):
        ingest(rt, [order(event_id=f"{tag}-{i}-{j}") for j in range(10)])
    return rt


def test_drain_stops_at_a_failed_commit_with_the_batches_before_it_loaded(
    settings: Settings,
) -> None:
    """The drain builds batch N+1 while N commits and commits log offsets in another thread;
    a failed commit still ends it with every earlier batch in the warehouse and in the log's
    offset, the prefetched batch dropped, and a second drain loads the rest once."""
    rt = small_batches(settings, 4, "d")
    real = rt.warehouse.commit_load
    seen: list[int] = []

    def fail_third(batch):  # type: ignore[no-untyped-def]
        seen.append(batch.last_offset)
        if len(seen) == 3:
            raise RuntimeError("power cut")
        return real(batch)

    rt.warehouse.commit_load = fail_third  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="power cut"):
        rt.loader.drain()
    assert rows(rt) == 20
    assert rt.log.committed("loader") == seen[1]  # the second batch's offset, already in the log
    assert rt.conservation().total("in_flight") == 20
    rt.loader.drain()
    assert len(seen) == 5  # the failed batch again, then the fourth; nothing loaded twice
    assert rows(rt) == 40
    c = rt.conservation()
    assert c.balanced
    assert (c.total("loaded"), c.total("in_flight")) == (40, 0)
    assert rt.log.committed("loader") == seen[-1]
    rt.stop()


def test_a_failed_log_commit_in_the_drain_loses_and_repeats_nothing(settings: Settings) -> None:
    """The log's offset is only a cleanup mark: when its commit fails the warehouse's offset
    still says what loaded, and the next log commit frees the records."""
    rt = small_batches(settings, 3, "l")
    real_commit = rt.log.commit

    def refuse(group: str, offset: int) -> None:
        raise OSError("disk I/O error")

    rt.log.commit = refuse  # type: ignore[method-assign]
    rt.loader.drain()
    assert rows(rt) == 30
    assert rt.log.committed("loader") == 0
    rt.log.commit = real_commit  # type: ignore[method-assign]
    ingest(rt, [order(event_id="l-last")])
    rt.loader.drain()
    assert rows(rt) == 31
    c = rt.conservation()
    assert c.balanced
    assert (c.total("loaded"), c.total("in_flight")) == (31, 0)
    assert rt.log.committed("loader") == rt.warehouse.stored_offset(rt.log.log_id, "loader")
    rt.stop()


def test_background_loader_survives_a_failing_batch(settings: Settings) -> None:
    rt = Runtime(settings)
    settings.loader.retry_backoff_s = 0.05
    calls = {"n": 0}
    real = rt.warehouse.commit_load

    def flaky(batch):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("transient")
        return real(batch)

    rt.warehouse.commit_load = flaky  # type: ignore[method-assign]
    ingest(rt, [order() for _ in range(3)])
    rt.start()
    import time

    deadline = time.monotonic() + 10
    while rows(rt) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rows(rt) == 3
    assert rt.loader.stats.failures == 1
    rt.stop()


def test_redelivery_across_restarts_loads_once(settings: Settings) -> None:
    events = [order(event_id=f"r-{i}") for i in range(20)]
    rt = Runtime(settings)
    ingest(rt, events)
    rt.loader.drain()
    rt.stop()
    rt = Runtime(settings)  # a restarted server: new process, same files
    ingest(rt, events[:10])
    rt.loader.drain()
    assert rows(rt) == 20
    c = rt.conservation()
    assert (c.total("received"), c.total("loaded"), c.total("duplicates")) == (30, 20, 10)
    assert c.balanced
    rt.stop()


def test_a_batch_the_warehouse_refuses_is_set_aside_not_stalled(settings: Settings) -> None:
    """If, despite every collector check, the warehouse refuses a frame's rows, the loader
    quarantines that frame (reason unloadable) after two failures and loads the rest."""
    rt = Runtime(settings)
    ingest(rt, [order(event_id="good-1")])
    ingest(rt, [order(event_id="poison")])
    ingest(rt, [order(event_id="good-2")])
    real = rt.warehouse.commit_load

    def refuse_poison(batch):  # type: ignore[no-untyped-def]
        for t in batch.tables:
            if "poison" in t.rows.column("event_id").to_pylist():
                raise ValueError("Conversion Error: simulated bad value")
        return real(batch)

    rt.warehouse.commit_load = refuse_poison  # type: ignore[method-assign]
    for _ in range(2):
        with pytest.raises(ValueError):
            rt.loader.run_once(timeout_s=0)
        assert rt.loader._failed_again() in (False, True)
    assert rt.loader.isolate() == 1
    assert rows(rt) == 2
    c = rt.conservation()
    assert c.balanced
    assert (c.total("loaded"), c.total("quarantined"), c.total("in_flight")) == (2, 1, 0)
    q = rt.warehouse.query(
        exp.select("reason", "event_id", "raw").from_(table_ref("_gristmill", "quarantine"))
    ).to_pylist()
    assert q[0]["reason"] == "unloadable"
    assert q[0]["event_id"] == "poison"
    assert orjson.loads(q[0]["raw"])["event_id"] == "poison"  # replayable native JSON
    rt.stop()


def test_isolation_quarantines_nothing_when_the_warehouse_is_down(settings: Settings) -> None:
    rt = Runtime(settings)
    ingest(rt, [order()])

    def down(batch):  # type: ignore[no-untyped-def]
        raise OSError("disk full")

    rt.warehouse.commit_load = down  # type: ignore[method-assign]
    with pytest.raises(OSError):
        rt.loader.isolate()
    c = rt.conservation()
    assert (c.total("quarantined"), c.total("in_flight")) == (0, 1)
    rt.stop()


def test_batch_wait_adapts_to_how_busy_the_loader_is(settings: Settings, tmp_path: Path) -> None:
    """Idle: a small batch loads at once; the wait grows with the share of time spent
    committing and never passes max_wait_s; adaptive_wait off keeps the fixed wait."""
    rt = Runtime(settings)
    loader = rt.loader
    assert isinstance(loader, Loader)
    loader.cpu = _meter(tmp_path, 0.5)  # the machine has room: the loader's own share rules
    cap = settings.loader.max_wait_s
    assert loader.batch_wait() == 0.0  # nothing committed yet: no reason to wait
    for _ in range(3):
        ingest(rt, [order()])
        assert loader.run_once(timeout_s=0) is not None
    assert 0.0 <= loader.batch_wait() <= cap
    loader._busy = 1.0  # saturated: every moment was spent committing
    assert loader.batch_wait() == cap
    loader._busy = 0.25
    assert loader.batch_wait() == pytest.approx(cap / 4)
    fixed = Loader(
        rt.log,
        rt.warehouse,
        rt.packs,
        settings.loader.model_copy(update={"adaptive_wait": False}),
    )
    fixed.cpu = _meter(tmp_path, 0.5)
    assert fixed.batch_wait() == cap
    rt.stop()


def _meter(tmp: Path, busy: float) -> CpuMeter:
    """A meter over a /proc/stat file whose two readings show ``busy`` of the CPUs used;
    later readings find no ticks added and keep that figure."""
    stat = tmp / f"stat-{busy}"
    meter = CpuMeter(
        proc_stat=stat, cgroup=tmp / "no-cgroup", cpus=frozenset({0}), min_interval_s=0
    )
    stat.write_text("cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n")
    meter.utilization()
    used, idle = round(busy * 1000), round((1 - busy) * 1000)
    stat.write_text(f"cpu  {used} 0 0 {idle} 0 0 0 0 0 0\ncpu0 {used} 0 0 {idle} 0 0 0 0 0 0\n")
    assert meter.utilization() == pytest.approx(busy)
    return meter


def test_batch_wait_grows_while_the_cpus_are_saturated(settings: Settings, tmp_path: Path) -> None:
    """Past ``saturated_cpu`` the wait grows to ``saturated_wait_s`` whatever the loader's
    own share; below it nothing changes; 0 turns it off; a drain never waits. Then under a
    saturated reading, small batches grow: requests arriving during the wait load together."""
    cfg = settings.loader
    assert (cfg.saturated_wait_s, cfg.saturated_cpu) == (0.4, 0.9)
    rt = Runtime(settings)
    loader = rt.loader
    assert isinstance(loader, Loader)
    loader.cpu = _meter(tmp_path, 0.99)
    assert loader.batch_wait() == cfg.saturated_wait_s
    loader.cpu = _meter(tmp_path, 0.925)  # half way up the ramp
    assert loader.batch_wait() == pytest.approx(cfg.saturated_wait_s / 2)
    loader.cpu = _meter(tmp_path, 0.91)  # a fifth of the way: 0.08 s
    loader._busy = 1.0  # the loader's own share asks for more (0.2 s): the longer wait holds
    assert loader.batch_wait() == cfg.max_wait_s
    loader._busy = 0.0
    loader.cpu = _meter(tmp_path, 0.89)
    assert loader.batch_wait() == 0.0
    for chosen in ({"saturated_wait_s": 0.0}, {"max_wait_s": 0.0}, {"adaptive_wait": False}):
        # Turned off, or a wait the operator fixed: saturation does not lengthen it.
        other = Loader(rt.log, rt.warehouse, rt.packs, cfg.model_copy(update=chosen))
        other.cpu = _meter(tmp_path, 1.0)
        expected = cfg.max_wait_s if chosen == {"adaptive_wait": False} else 0.0
        assert other.batch_wait() == expected
    loader.cpu = _meter(tmp_path, 1.0)
    loader.drain_mark()
    assert loader.batch_wait() == 0.0
    loader._draining = False

    # Saturated: the first request's batch waits, and the requests sent meanwhile join it
    # (sent when the loader reads the meter, so as its wait begins; the batch stops waiting
    # once it holds target_events, so nothing here is timed).
    waits = Loader(
        rt.log,
        rt.warehouse,
        rt.packs,
        cfg.model_copy(update={"saturated_wait_s": 60.0, "target_events": 3}),
    )
    saturated = _meter(tmp_path, 1.0)
    asked = threading.Event()

    class Asked:
        """The saturated meter, saying when the loader read it: its batch now waits."""

        def __init__(self, then: Callable[[], object] = lambda: None) -> None:
            self.then = then

        def utilization(self) -> float | None:
            asked.set()
            self.then()
            return saturated.utilization()

    waits.cpu = Asked(lambda: ingest(rt, [order(), order()]))  # type: ignore[assignment]
    ingest(rt, [order()])
    result = waits.run_once()
    assert result is not None
    assert result.total_loaded == 3
    assert rows(rt) == 3
    assert waits.stats.last_wait_seconds > 0  # the wait it took, not the one it could
    assert waits.stats.last_wait_ended == "full"

    # Nothing more comes: two empty polls end the wait (the end of a burst)...
    waits.cpu = Asked()  # type: ignore[assignment]
    ingest(rt, [order()])
    result = waits.run_once()
    assert result is not None
    assert result.total_loaded == 1
    assert waits.stats.last_wait_ended == "quiet"
    assert waits.stats.last_wait_seconds < 30  # a liveness bound: the wait allowed is 60 s
    # ... but not a wait the operator fixed, which runs its course.
    fixed = Loader(rt.log, rt.warehouse, rt.packs, cfg.model_copy(update={"adaptive_wait": False}))
    ingest(rt, [order()])
    result = fixed.run_once()
    assert result is not None
    assert result.total_loaded == 1
    assert fixed.stats.last_wait_ended == "wait"

    # A drain asked for while a batch waits, with events still coming, ends the wait.
    asked.clear()
    stop = threading.Event()

    def trickle() -> None:  # one event every 10 ms while the batch waits, for at most 60 s
        for _ in range(6000):
            if stop.wait(0.01):
                return
            ingest(rt, [order()])

    ingest(rt, [order()])
    feeding = threading.Thread(target=trickle)
    feeding.start()
    results: list[LoadResult | None] = []
    waiting = threading.Thread(target=lambda: results.append(waits.run_once()))
    try:
        # Polls 1 s apart: only a 2 s pause in the trickle could end the wait before the
        # drain does (two empty polls), so it is the drain that ends it.
        waits.settings = waits.settings.model_copy(
            update={"target_events": 10**6, "idle_poll_s": 1.0}
        )
        waiting.start()
        assert asked.wait(30)
        waits.drain_mark()
        waiting.join(30)  # a liveness bound, not a timing: the wait alone is 60 s
    finally:
        stop.set()
        feeding.join()
    assert not waiting.is_alive()
    assert len(results) == 1
    assert results[0] is not None
    assert results[0].total_loaded >= 1
    assert waits.stats.last_wait_ended == "drain"
    rt.stop()
