"""Frames handed to the embedded log unencoded, and written as few records as a group
commit allows.

A single-event request used to encode its own frame: a chunk per column (14 of them for one
event), a msgpack record, a row in the log file, and at load a frame to decode, all for one
event. Under a stream of such requests that per-frame work was about a quarter of the
collector's CPU per request (BENCHMARKS.md, "Single-event requests"). The
embedded log's writer thread already takes every request queued since its last commit; it
now encodes the accepted events of consecutive requests of one pack, source and dialect as
one frame (:func:`~gristmill.core.envelope.encode_frames`), each event keeping its own
receive time.

What is merged and what is not:

- only small frames (:data:`SMALL` events or fewer) come here unencoded; larger ones are
  encoded by the collector as before, one record per request;
- a request's frame merges with the next one of its source only if neither has rejects (a
  reject's ``index`` is its place in its own request, and quarantine ids are built from it)
  and both came through the same dialect and pack layout;
- a frame that cannot be merged, or records already encoded (a larger request, a replay),
  ends its source's run, and everything is written in queue order otherwise: the log's
  order of a source's events is the order its requests were queued in;
- if a merged frame cannot be encoded, its frames are encoded one by one, so only the
  request whose frame fails hears of it.
"""

from __future__ import annotations

from collections.abc import Sequence

from gristmill.core.envelope import Frame, Layout, encode_frames
from gristmill.log.base import LogRecord

Pending = tuple[Frame, Layout]
Item = tuple[Pending | None, Sequence[LogRecord], int]
"""One append of a group commit: a frame to encode, or records already encoded (replay,
relay, a consumer, a collector's frame of more than :data:`SMALL` events), and the bytes
the append reserved against the cap (for a frame, its :func:`estimate`)."""

SMALL = 16
"""Frames of at most this many events are handed to the log unencoded, to be merged. Above
it a frame's own encode is cheap per event (BENCHMARKS.md: ~11 µs for one event, ~0.6 µs per
event at 100), merging costs more per event than it saves, and the encode is better done by
the collector's event loop while the writer thread waits on the disk: handing 100-event
frames to the writer made end-to-end ingest of 100-event requests ~25% slower."""

MAX_EVENTS = 1_000
"""Most events a merged record carries. The gain is for small requests (one record per
request costs most there); a bound keeps a record far under a load's ``max_events`` and
limits what a load that sets entries aside one by one (``Loader.isolate``) sets aside
together."""
MAX_BYTES = 1 << 20
"""Most bytes (estimated) a merged record carries."""


def estimate(frame: Frame) -> int:
    """Bytes the frame will take in the log, for the cap check before it is encoded (the
    log's running total is corrected by the encoded size after the write)."""
    size = 64
    for ev in frame.events:
        size += 48 + len(ev.event_id) + len(ev.properties) + len(ev.context or b"")
    for r in frame.rejects:
        size += 32 + len(r.raw) + len(r.detail)
    return size


def runs(items: Sequence[Item]) -> list[list[int]]:
    """Indexes of ``items`` cut into runs to write as one record each (an item of plain
    records: as they are), in the order of each run's first item. A run holds consecutive
    frames of one (pack, source) with events, no rejects, one dialect and one layout, up to
    :data:`MAX_EVENTS` and :data:`MAX_BYTES`; anything else of that source in between (a
    frame that cannot join, plain records) ends it."""
    out: list[list[int]] = []
    open_runs: dict[tuple[str, str], tuple[list[int], list[int]]] = {}
    """(pack, source) -> its open run, and that run's events and estimated bytes."""
    for i, (pending, plain, size) in enumerate(items):
        if pending is None:
            for r in plain:
                open_runs.pop((r.pack, r.source), None)
            out.append([i])
            continue
        f, layout = pending
        key = (f.pack, f.source)
        if not f.events or f.rejects:
            open_runs.pop(key, None)
            out.append([i])
            continue
        have = open_runs.get(key)
        if have is not None:
            run, totals = have
            head, head_layout = _frame(items[run[0]])
            if (
                head.dialect == f.dialect
                and (head_layout is layout or head_layout == layout)
                and totals[0] + len(f.events) <= MAX_EVENTS
                and totals[1] + size <= MAX_BYTES
            ):
                run.append(i)
                totals[0] += len(f.events)
                totals[1] += size
                continue
        run = [i]
        open_runs[key] = (run, [len(f.events), size])
        out.append(run)
    return out


def records(items: Sequence[Item]) -> tuple[list[LogRecord], dict[int, BaseException]]:
    """The records to append for ``items``, in order, and the items whose frame could not
    be encoded (by index, with why)."""
    out: list[LogRecord] = []
    failed: dict[int, BaseException] = {}
    for run in runs(items):
        pending, plain, _ = items[run[0]]
        if pending is None:
            out += plain
            continue
        try:
            out.append(_record([_frame(items[i])[0] for i in run], pending[1]))
            continue
        except Exception as exc:
            if len(run) == 1:
                failed[run[0]] = exc
                continue
        for i in run:  # find the frame that cannot be encoded; write the others
            try:
                f, layout = _frame(items[i])
                out.append(_record([f], layout))
            except Exception as exc:
                failed[i] = exc
    return out, failed


def _frame(item: Item) -> Pending:
    pending = item[0]
    assert pending is not None
    return pending


def _record(frames: Sequence[Frame], layout: Layout) -> LogRecord:
    first = frames[0]
    return LogRecord(
        first.pack,
        first.source,
        sum(f.count for f in frames),
        min(f.received_at for f in frames),
        encode_frames(frames, layout),
        sum(f.suppressed for f in frames),
    )
