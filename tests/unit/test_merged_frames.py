"""Frames merged at the embedded log's group commit (``log.frames``, ``encode_frames``): the
requests of one source written as one record load exactly as they would have one by one,
each event keeping its own receive time; what cannot be merged is not; a frame that cannot
be encoded fails its own request only; the log's byte total ends at what it stored."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from gristmill.collect.service import DIALECTS, Collector
from gristmill.config import LimitSettings
from gristmill.core.columns import unpack
from gristmill.core.envelope import (
    Block,
    ColumnFrame,
    Envelope,
    Frame,
    decode_frame_columns,
    encode_frames,
)
from gristmill.load.batch import build_batch
from gristmill.log import frames
from gristmill.log.base import LogEntry, LogRecord
from gristmill.log.sqlite import SQLiteLog
from gristmill.pack.loader import load_pack
from gristmill.pack.models import Pack
from tests.typed_pack import AT, TYPED, collect, event


@pytest.fixture(scope="module")
def typed() -> Pack:
    return load_pack(TYPED)


def rows(entries: list[LogEntry], pack: Pack) -> dict[str, list[dict[str, Any]]]:
    b = build_batch(entries, {pack.name: pack}, log_id="t", group="g")
    return {t.table: t.rows.to_pylist() for t in b.tables}


def item(pending: frames.Pending) -> frames.Item:
    """A frame's append as the group commit hands it over (its estimate reserved)."""
    return pending, (), frames.estimate(pending[0])


def us(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def entry(offset: int, body: bytes, f: Frame) -> LogEntry:
    return LogEntry(offset, LogRecord(f.pack, f.source, f.count, f.received_at, body))


def test_a_merged_frame_loads_as_its_requests_did_each_event_at_its_own_time(
    typed: Pack,
) -> None:
    reqs = [
        collect(typed, [event("a", {"s": "x"})], at=AT + 1),
        collect(typed, [event("o1", {"s": "y", "note": "n"}, "other")], at=AT + 2),
        collect(typed, [event("b", {"i": 3}), event("o2", {}, "other")], at=AT + 3),
    ]
    merged = encode_frames([p.frame for p in reqs], reqs[0].layout)
    got = decode_frame_columns(merged)
    assert isinstance(got, ColumnFrame)
    assert got.received_at == AT + 1  # the earliest: what a reader that predates the column sees
    assert [(b.table, len(b)) for b in got.blocks] == [("typed_events", 2), ("other_events", 2)]
    one_by_one = rows([entry(i + 1, p.record().body, p.frame) for i, p in enumerate(reqs)], typed)
    first = reqs[0].frame
    whole = Frame(first.pack, first.source, AT + 1, [e for p in reqs for e in p.frame.events], [])
    assert rows([entry(1, merged, whole)], typed) == one_by_one
    times = {r["event_id"]: r["received_at"] for t in one_by_one.values() for r in t}
    assert {k: us(v) for k, v in times.items()} == {
        "a": AT + 1,
        "o1": AT + 2,
        "b": AT + 3,
        "o2": AT + 3,
    }


def test_requests_received_in_the_same_microsecond_carry_no_time_column(typed: Pack) -> None:
    reqs = [collect(typed, [event(e, {})]) for e in ("a", "b")]
    got = decode_frame_columns(encode_frames([p.frame for p in reqs], reqs[0].layout))
    assert isinstance(got, ColumnFrame)
    assert [b.received_at for b in got.blocks] == [None]


class OldBlock(msgspec.Struct, array_like=True):
    """:class:`Block` as readers before the time column declared it (its 14 fields)."""

    table: str
    promoted: Any
    event_id: Any
    event_type: Any
    schema_version: Any
    occurred_at: Any
    properties: Any
    values: Any
    user_id: Any
    anonymous_id: Any
    session_id: Any
    entity_type: Any
    entity_id: Any
    context: Any


class OldFrame(msgspec.Struct, array_like=True):
    version: int
    pack: str
    source: str
    received_at: int
    blocks: list[OldBlock]
    rejects: Any
    dialect: str
    suppressed: int


def test_a_reader_that_predates_the_time_column_still_reads_a_merged_frame(typed: Pack) -> None:
    """The column was added without a version bump: an older loader's Block (without the
    trailing field) decodes the frame and takes the frame's time for every event."""
    assert Block.__struct_fields__[:14] == OldBlock.__struct_fields__
    reqs = [collect(typed, [event(e, {"s": e})], at=AT + i) for i, e in enumerate("abc")]
    body = encode_frames([p.frame for p in reqs], reqs[0].layout)
    old = msgspec.msgpack.decode(body, type=OldFrame)
    assert old.received_at == AT
    (block,) = old.blocks
    assert unpack(block.event_id, 3) == ["a", "b", "c"]


def test_a_split_block_keeps_each_events_time(typed: Pack) -> None:
    reqs = [collect(typed, [event(e, {})], at=AT + i) for i, e in enumerate("abc")]
    got = decode_frame_columns(encode_frames([p.frame for p in reqs], reqs[0].layout))
    assert isinstance(got, ColumnFrame)
    part = got.blocks[0].take([2, 0])
    assert part.column("event_id") == ["c", "a"]
    assert part.received(0) == [AT + 2, AT]
    assert got.blocks[0].received(0) == [AT, AT + 1, AT + 2]


def test_frames_with_rejects_or_of_two_sources_are_not_merged(typed: Pack) -> None:
    good = collect(typed, [event("a", {})])
    bad = collect(typed, [event("b", {}), {"event_type": "typed"}])  # the second has no id
    assert bad.frame.rejects
    other = collect(typed, [event("c", {})], "app")
    for pair in ([good.frame, bad.frame], [good.frame, other.frame]):
        with pytest.raises(ValueError, match="only frames of one pack"):
            encode_frames(pair, good.layout)


def test_runs_keep_each_sources_order(typed: Pack) -> None:
    """A frame that cannot join a run (rejects, another dialect or layout) ends its source's
    run: the log keeps a source's requests in the order they were queued."""
    lay = collect(typed, [event("x", {})]).layout
    other_lay = {**lay, "typed": ("elsewhere", ())}

    def f(source: str, *, rejects: bool = False, dialect: str = "native") -> frames.Pending:
        p = collect(
            typed,
            [event("x", {}), {"event_type": "typed"}] if rejects else [event("x", {})],
            source,
        )
        fr = p.frame
        return Frame(fr.pack, fr.source, fr.received_at, fr.events, fr.rejects, dialect), lay

    plain_app = LogRecord("typed", "app", 20, AT, b"a frame the collector encoded")
    queued: list[frames.Item] = [
        item(f("web")),  # 0
        item(f("app")),  # 1
        item(f("web")),  # 2: joins 0
        item(f("web", rejects=True)),  # 3: alone, ends web's run
        item(f("web")),  # 4: a new run
        item(f("app", dialect="segment")),  # 5: another dialect, a new run for app
        item(f("app", dialect="segment")),  # 6: joins 5
        item((f("web")[0], other_lay)),  # 7: another layout, a new run
        (None, [plain_app], len(plain_app.body)),  # 8: plain records of app end its run
        item(f("app", dialect="segment")),  # 9: a new run
    ]
    assert frames.runs(queued) == [[0, 2], [1], [3], [4], [5, 6], [7], [8], [9]]
    recs, failed = frames.records(queued)
    assert not failed
    assert [r.count for r in recs if r.source == "app"] == [1, 2, 20, 1]
    assert [r.count for r in recs if r.source == "web"] == [2, 2, 1, 1]


def test_a_merged_record_stays_under_its_bounds(
    typed: Pack, monkeypatch: pytest.MonkeyPatch
) -> None:
    lay = collect(typed, [event("x", {})]).layout
    ten = collect(typed, [event(f"t{i}", {}) for i in range(10)]).frame
    one = collect(typed, [event("o", {})]).frame
    monkeypatch.setattr(frames, "MAX_EVENTS", 25)
    queued: list[frames.Item] = [item((f, lay)) for f in (ten, ten, one, ten, one)]
    assert frames.runs(queued) == [[0, 1, 2], [3, 4]]
    monkeypatch.setattr(frames, "MAX_BYTES", frames.estimate(ten) + 1)
    assert frames.runs([item((f, lay)) for f in (ten, one, one)]) == [[0], [1, 2]]


def test_a_frame_that_cannot_be_encoded_fails_alone(typed: Pack) -> None:
    good = [collect(typed, [event(e, {})], at=AT + i).frame for i, e in enumerate("ab")]
    lay = collect(typed, [event("x", {})]).layout
    e = good[0].events[0]
    broken = Envelope(
        e.event_id, e.event_type, 1, e.occurred_at, b"{}", (object(),) * len(e.promoted)
    )
    poison = Frame("typed", "web", AT, [broken], [])
    recs, failed = frames.records([item((good[0], lay)), item((poison, lay)), item((good[1], lay))])
    assert list(failed) == [1]
    assert [r.count for r in recs] == [1, 1]  # the other two, each on its own
    loaded = rows([LogEntry(i + 1, r) for i, r in enumerate(recs)], typed)
    assert [r["event_id"] for r in loaded["typed_events"]] == ["a", "b"]


def test_the_log_merges_a_burst_and_its_byte_total_is_what_it_stored(
    tmp_path: Path, typed: Pack
) -> None:
    log = SQLiteLog(tmp_path / "log.sqlite", max_bytes=10_000_000)
    reqs = [collect(typed, [event(f"e{i}", {"s": "v" * (i % 7)})], at=AT + i) for i in range(200)]
    reqs.append(collect(typed, [event("r", {}), {"event_type": "typed"}], at=AT + 500))

    async def burst() -> None:
        await asyncio.gather(*(log.append_frame_async(p.frame, p.layout) for p in reqs))

    try:
        asyncio.run(burst())
        batch = log.read("g", 10_000, 0)
        assert len(batch.entries) < len(reqs)  # merged: fewer records than requests
        assert batch.events == 202
        snap = log.snapshot("g")
        assert snap.received == {("typed", "web"): 202}
        stored = sum(len(en.record.body) for en in batch.entries)
        assert snap.depth_bytes == stored
        assert log.pending_bytes == stored  # the estimates reserved were corrected
        got = rows(batch.entries, typed)["typed_events"]
        want = {f"e{i}": AT + i for i in range(200)} | {"r": AT + 500}
        assert {r["event_id"]: us(r["received_at"]) for r in got} == want
    finally:
        log.close()


def test_the_collector_hands_over_only_small_frames_to_be_merged(
    tmp_path: Path, typed: Pack
) -> None:
    """A request of more than ``frames.SMALL`` events is encoded by the collector and kept
    as its own record (merging larger frames cost more than it saved); small ones merge."""
    log = SQLiteLog(tmp_path / "log.sqlite", max_bytes=100_000_000)
    collector = Collector({"typed": typed}, log, LimitSettings())
    native = DIALECTS["native"]
    size = frames.SMALL + 4

    def body(i: int, n: int) -> bytes:
        return orjson.dumps([event(f"r{i}-{k}", {"s": "x"}) for k in range(n)])

    async def send(bodies: list[bytes]) -> list[int]:
        async def one(raw: bytes) -> int:
            opened = collector.open(native, raw, "application/json")
            return (await collector.finish(native, "typed", "web", opened)).status

        return await asyncio.gather(*(one(b) for b in bodies))

    try:
        assert set(asyncio.run(send([body(i, size) for i in range(60)]))) == {200}
        large = log.read("g", 100_000, 0)
        assert [e.record.count for e in large.entries] == [size] * 60
        assert set(asyncio.run(send([body(100 + i, 1) for i in range(200)]))) == {200}
        small = log.read("g", 100_000, 0, after=large.last_offset)
        assert small.events == 200
        assert len(small.entries) < 200
    finally:
        log.close()
