"""Frames on the wire: version 2 (column blocks) against version 1 (rows), which logs written
before it still hold. Frames come from the real collector over a pack with one promoted column
of every type (tests/fixtures/packs/typed); the loader must build the very same Arrow tables
from either version, in any mix."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pyarrow as pa
import pytest

from gristmill.collect.service import Parser, Prepared
from gristmill.config import LimitSettings
from gristmill.core.envelope import (
    FRAME_VERSION,
    Block,
    ColumnFrame,
    Envelope,
    Frame,
    FrameRows,
    Reason,
    decode_frame,
    decode_frame_columns,
    decode_frame_rows,
    encode_frame,
    encode_row_frame,
)
from gristmill.load.batch import (
    SCOPE_SEPARATOR,
    build_batch,
    dedupe_scope,
    first_deliveries,
    quarantine_batch,
)
from gristmill.log.base import LogEntry, LogRecord
from gristmill.pack.loader import load_pack
from gristmill.pack.models import Pack
from tests.typed_pack import AT, TYPED, collect, event

FULL = {
    "s": "héllo",
    "i": 2**62,
    "f": 1.5,
    "b": False,
    "ts": "2026-11-01T10:00:00.123456Z",
    "d": "2026-11-02",
    "j": {"a": [1, 2], "b": None},
}


def entry(offset: int, p: Prepared, *, rows: bool = False, version: int = 0) -> LogEntry:
    """``p``'s frame as the log holds it: as the collector writes it, as row frames
    (version 1) or as ``version`` 2 (column blocks of plain arrays)."""
    f = p.frame
    if rows:
        body = encode_row_frame(f)
    elif version:
        body = encode_frame(f, p.layout, version=version)
    else:
        body = p.record().body
    return LogEntry(offset, LogRecord(f.pack, f.source, f.count, f.received_at, body))


def tables(entries: list[LogEntry], pack: Pack) -> dict[str, list[dict[str, Any]]]:
    b = build_batch(entries, {pack.name: pack}, log_id="t", group="g")
    return {t.table: t.rows.to_pylist() for t in b.tables}


@pytest.fixture
def typed() -> Pack:
    return load_pack(TYPED)


MIXED = [
    event("e1", FULL, user_id="u-42", session_id="s1", context={"ip": "127.0.0.1"}),
    event("o1", {"s": "x", "note": "first"}, "other", anonymous_id="a-1"),
    event("e2", dict.fromkeys(FULL)),  # every promoted value an explicit null
    event("e3", {}),  # every promoted value missing
    event("o2", {"s": "y", "note": "second"}, "other"),
]


def test_a_batch_lists_its_tables_in_one_order_whatever_arrives_first(typed: Pack) -> None:
    """Every load goes through the tables in the same order (a PostgreSQL loader takes key
    and rollup locks table by table: opposite orders in two loaders could deadlock)."""
    other_first = collect(typed, [MIXED[1], MIXED[0]])
    typed_first = collect(typed, [MIXED[0], MIXED[1]])
    for p in (other_first, typed_first):
        b = build_batch([entry(1, p)], {"typed": typed}, log_id="t", group="g")
        assert [t.table for t in b.tables] == ["other_events", "typed_events"]


def test_every_column_type_and_null_round_trips(typed: Pack) -> None:
    p = collect(typed, MIXED)
    body = p.record().body
    got = decode_frame_columns(body)
    assert isinstance(got, ColumnFrame)
    assert got.version == FRAME_VERSION
    assert [(b.table, len(b)) for b in got.blocks] == [("typed_events", 3), ("other_events", 2)]
    out = tables([entry(1, p)], typed)
    rows = {r["event_id"]: r for r in out["typed_events"]}
    e1 = rows["e1"]
    assert (e1["s"], e1["i"], e1["f"], e1["b"], e1["d"]) == (
        "héllo",
        2**62,
        1.5,
        False,
        "2026-11-02",
    )
    assert e1["ts"] == datetime(2026, 11, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert orjson.loads(e1["j"]) == {"a": [1, 2], "b": None}
    assert orjson.loads(e1["properties"]) == FULL
    assert (e1["user_id"], e1["session_id"], e1["anonymous_id"]) == ("u-42", "s1", None)
    assert orjson.loads(e1["context"]) == {"ip": "127.0.0.1"}
    assert e1["occurred_at"] == datetime(2026, 11, 1, 9, tzinfo=UTC)
    assert (e1["schema_version"], e1["source"], e1["event_type"]) == (1, "web", "typed")
    for eid in ("e2", "e3"):
        assert [rows[eid][c] for c in FULL] == [None] * len(FULL), eid
        assert rows[eid]["context"] is None
        assert rows[eid]["user_id"] is None
    assert [(r["event_id"], r["s"], r["note"]) for r in out["other_events"]] == [
        ("o1", "x", "first"),
        ("o2", "y", "second"),
    ]
    assert out["other_events"][0]["anonymous_id"] == "a-1"
    # Versions 1 and 2 of the same frame build the very same tables.
    assert tables([entry(1, p, rows=True)], typed) == out
    assert tables([entry(1, p, version=2)], typed) == out
    assert decode_frame_columns(entry(1, p, version=2).record.body).version == 2  # type: ignore[union-attr]


def test_decoders_give_the_envelopes_back_from_either_version(typed: Pack) -> None:
    p = collect(typed, MIXED)
    want = sorted(p.frame.events, key=lambda e: e.event_id)
    for body in (p.record().body, encode_row_frame(p.frame)):
        f = decode_frame(body)
        assert sorted(f.events, key=lambda e: e.event_id) == want
        assert (f.pack, f.source, f.received_at, f.rejects) == (
            p.frame.pack,
            p.frame.source,
            p.frame.received_at,
            p.frame.rejects,
        )
        rows = decode_frame_rows(body)
        assert sorted(r[0] for r in rows.events) == [e.event_id for e in want]
    assert isinstance(decode_frame_columns(encode_row_frame(p.frame)), FrameRows)


def test_old_and_new_frames_load_in_one_batch(typed: Pack) -> None:
    old = collect(typed, [event("a", {"s": "old"}), event("b", {"s": "old"})], at=AT + 10)
    new = collect(typed, [event("c", {"s": "new"}), event("a", {"s": "again"})], at=AT + 20)
    other_src = collect(typed, [event("a", {"s": "app"})], source="app", at=AT + 30)
    entries = [entry(1, old, rows=True), entry(2, new), entry(3, other_src)]
    b = build_batch(entries, {"typed": typed}, log_id="t", group="g")
    (t,) = b.tables
    got = [(r["event_id"], r["source"], r["s"]) for r in t.rows.to_pylist()]
    # The re-sent "a" from the same source is dropped (the first delivery wins); from
    # another source it is another event (scope: source).
    assert got == [
        ("a", "web", "old"),
        ("b", "web", "old"),
        ("c", "web", "new"),
        ("a", "app", "app"),
    ]
    assert {k: (v.events, v.quarantined) for k, v in b.sources.items()} == {
        ("typed", "web"): (4, 0),
        ("typed", "app"): (1, 0),
    }
    # Order of versions does not matter: new first, then old.
    rev = build_batch(
        [entry(1, new), entry(2, old, rows=True)], {"typed": typed}, log_id="t", group="g"
    )
    got = [(r["event_id"], r["s"]) for r in rev.tables[0].rows.to_pylist()]
    assert got == [("c", "new"), ("a", "again"), ("b", "old")]


def test_scope_naming_event_type_and_a_column(typed: Pack, tmp_path: Path) -> None:
    root = tmp_path / "typed"
    shutil.copytree(TYPED, root)
    yaml = root / "pack.yaml"
    yaml.write_text(yaml.read_text().replace("scope: [source]", "scope: [source, event_type, s]"))
    scoped = load_pack(root)
    p = collect(
        scoped,
        [
            event("x", {"s": "one", "i": 1}),
            event("x", {"s": "two", "i": 2}),  # another scope: kept
            event("x", {"s": "one", "i": 3}),  # a repeat: dropped
            event("y", {"i": 4}),  # s missing: scope part ""
        ],
    )
    for e in (entry(1, p), entry(1, p, rows=True), entry(1, p, version=2)):
        rows = tables([e], scoped)["typed_events"]
        assert [(r["event_id"], r["i"]) for r in rows] == [("x", 1), ("x", 2), ("y", 4)]
        assert [r["_dedupe_scope"] for r in rows] == [
            dedupe_scope(scoped, "web", "typed", {"s": r["s"]}) for r in rows
        ]


def test_pack_changed_between_collect_and_load(typed: Pack, tmp_path: Path) -> None:
    root = tmp_path / "typed"
    shutil.copytree(TYPED, root)
    yaml = root / "pack.yaml"
    text = yaml.read_text()
    text = text[: text.index("  other:\n    description: Goes")]
    yaml.write_text(text[: text.index("  other_events:")] + text[text.index("event_types:") :])
    (root / "schemas" / "other" / "1.json").unlink()
    (root / "schemas" / "other").rmdir()
    shrunk = load_pack(root)
    p = collect(typed, MIXED)
    for e in (entry(7, p), entry(7, p, rows=True)):
        b = build_batch([e], {"typed": shrunk}, log_id="t", group="g")
        assert [t.table for t in b.tables] == ["typed_events"]
        assert b.tables[0].rows.num_rows == 3
        assert b.quarantine is not None
        q = b.quarantine.to_pylist()
        assert [(r["event_id"], r["reason"]) for r in q] == [
            ("o1", "unknown_event_type"),
            ("o2", "unknown_event_type"),
        ]
        assert len({r["quarantine_id"] for r in q}) == 2
        native = orjson.loads(q[0]["raw"])
        assert native["properties"] == {"s": "x", "note": "first"}
        assert native["anonymous_id"] == "a-1"
        assert native["event_type"] == "other"
        assert b.sources[("typed", "web")].quarantined == 2
    # The pack gone entirely: every event in quarantine, with unique ids across blocks.
    b = build_batch([entry(7, p)], {}, log_id="t", group="g")
    assert b.quarantine is not None
    assert not b.tables
    ids = [r["quarantine_id"] for r in b.quarantine.to_pylist()]
    assert len(ids) == len(set(ids)) == len(MIXED)


def test_a_block_the_pack_now_routes_to_two_tables_is_split_by_name(typed: Pack) -> None:
    """A block cut by an older routing (both types to one table) loads each event into the
    table the pack routes it to now, its values matched by column name."""
    p = collect(typed, [event("o1", {"s": "x", "note": "n1"}, "other")])
    typed_too = p.frame.events[0]
    p.frame.events.append(msgspec.structs.replace(typed_too, event_id="t1", event_type="typed"))
    p.layout = {"typed": ("old_table", ("s", "note")), "other": ("old_table", ("s", "note"))}
    (block,) = decode_frame_columns(p.record().body).blocks  # type: ignore[union-attr]
    assert isinstance(block, Block)
    assert block.table == "old_table"
    out = tables([entry(1, p)], typed)
    assert [(r["event_id"], r["s"], r["note"]) for r in out["other_events"]] == [("o1", "x", "n1")]
    (t1,) = out["typed_events"]
    assert (t1["event_id"], t1["s"], t1["i"], t1["j"]) == ("t1", "x", None, None)


def test_rejects_keep_their_bytes_and_quarantine_batch_reads_both(typed: Pack) -> None:
    bad = orjson.dumps(event("r1", {"i": "not a number"})).replace(b",", b", ")
    parser = Parser({"typed": typed}, LimitSettings())
    raw = b"[" + bad + b"," + orjson.dumps(MIXED[0]) + b"]"
    p = parser.prepare(pack="typed", source="web", dialect="native", raw=raw, received_at=AT)
    assert [r.raw for r in p.frame.rejects] == [bad]
    for e in (entry(3, p), entry(3, p, rows=True)):
        b = build_batch([e], {"typed": typed}, log_id="t", group="g")
        assert b.quarantine is not None
        (q,) = b.quarantine.to_pylist()
        assert (q["raw"], q["reason"], q["event_id"]) == (bad, "schema_violation", "r1")
        qb = quarantine_batch([e], log_id="t", group="g", reason=Reason.UNLOADABLE, detail="why")
        assert qb.quarantine is not None
        got = sorted(qb.quarantine.to_pylist(), key=lambda r: r["quarantine_id"])
        assert next(r["raw"] for r in got) == bad
        assert orjson.loads(got[1]["raw"])["event_id"] == "e1"
        assert qb.sources[("typed", "web")].quarantined == 2


def test_unknown_version_is_quarantined_whole_with_its_bytes(typed: Pack) -> None:
    p = collect(typed, MIXED[:1])
    body = p.record().body
    assert body[:2] == b"\x98\x03"
    future = b"\x98\x04" + body[2:]
    with pytest.raises(msgspec.DecodeError, match="version 4"):
        decode_frame_columns(future)
    rec = LogRecord("typed", "web", 1, 1, future)
    b = build_batch([LogEntry(4, rec)], {"typed": typed}, log_id="t", group="g")
    assert b.quarantine is not None
    (q,) = b.quarantine.to_pylist()
    assert (q["raw"], q["reason"]) == (future, "undecodable")


def test_identifiers_stay_plain_bytes_for_erasure_scans(typed: Pack) -> None:
    """Erasure proves a subject is gone by scanning the log files for its id's bytes
    (tests/integration/test_erasure.py): a column frame must hold them as they are."""
    p = collect(typed, [event("e1", {"s": "Zoë"}, user_id="user-Zoë-42")])
    assert "user-Zoë-42".encode() in p.record().body
    assert "Zoë".encode() in p.record().body


def test_first_deliveries_keeps_the_first_of_each_scope_and_id_in_order() -> None:
    sep = SCOPE_SEPARATOR
    t = pa.table(
        {
            "event_id": ["c", f"b{sep}c", "c", "d", "c"],
            "_dedupe_scope": [f"a{sep}b", "a", f"a{sep}b", "a", "a"],
            "n": [1, 2, 3, 4, 5],
        }
    )
    # Joined as text the first two would be one key; as a pair they are two events.
    assert first_deliveries(t)["n"].to_pylist() == [1, 2, 4, 5]


def test_a_table_without_promoted_columns_and_an_unknown_type() -> None:
    """A block of a table that promotes nothing has no value columns; a frame with an event
    type the layout does not know is written as version 1 rather than lose values."""
    ev = Envelope("e1", "bare", 1, 5, b"{}", (), context=b'{"a":1}')
    f = Frame("p", "web", 7, [ev], [])
    body = encode_frame(f, {"bare": ("bare_events", ())})
    got = decode_frame_columns(body)
    assert isinstance(got, ColumnFrame)
    assert got.blocks[0].values == []
    assert decode_frame(body).events == [ev]
    odd = encode_frame(f, {"other": ("t", ())})
    assert odd == encode_row_frame(f)
    assert decode_frame(odd).events == [ev]


def _damage_event_id(block: Block) -> None:
    assert isinstance(block.event_id, bytes)
    block.event_id = block.event_id[:-1] + b"\xff"  # the last id is no longer UTF-8


def _damage_event_type(block: Block) -> None:
    assert isinstance(block.event_type, bytes)
    block.event_type = block.event_type[:-1] + b"\x09"  # a code past the block's types


def _damage_header(block: Block) -> None:
    assert isinstance(block.event_type, bytes)
    block.event_type = block.event_type[:6]  # the kinds header cut short


def _damage_occurred_at(block: Block) -> None:
    assert isinstance(block.occurred_at, bytes)
    block.occurred_at = block.occurred_at[:-3]  # not a whole number of int64s


@pytest.mark.parametrize(
    "damage", [_damage_event_id, _damage_event_type, _damage_header, _damage_occurred_at]
)
def test_a_damaged_chunk_quarantines_its_frame_and_the_rest_load(typed: Pack, damage: Any) -> None:
    """The loader checks a batch's chunks as a whole; when one is bad (or cannot even be
    routed) it builds the batch again checking each frame, so the damaged frame goes to
    quarantine whole, with its bytes, and the frames beside it load."""
    good = collect(typed, [event("g1", {"s": "ok"})], at=AT + 1)
    hurt = collect(typed, [event("h1", {"s": "ok"}), event("h2", {"s": "fine"})], at=AT + 2)
    frame = decode_frame_columns(hurt.record().body)
    assert isinstance(frame, ColumnFrame)
    damage(frame.blocks[0])
    damaged = msgspec.msgpack.encode(frame)
    with pytest.raises(msgspec.DecodeError, match="version 3 column chunk"):
        decode_frame_columns(damaged)
    rec = LogRecord("typed", "web", 2, AT + 2, damaged)
    b = build_batch([entry(1, good), LogEntry(2, rec)], {"typed": typed}, log_id="t", group="g")
    assert [r["event_id"] for r in b.tables[0].rows.to_pylist()] == ["g1"]
    assert b.quarantine is not None
    (q,) = b.quarantine.to_pylist()
    assert (q["raw"], q["reason"]) == (damaged, "undecodable")
    assert {k: (v.events, v.quarantined) for k, v in b.sources.items()} == {
        ("typed", "web"): (3, 2)
    }
