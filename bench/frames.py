"""Issue 14 item 2 figures: what column frames cost the collector and save the loader.

The same demo traffic, framed once by the real collector in 100-event requests, then:

- **collector**: per request, the whole framing (parse, validate, promote; ``Parser.frame``)
  and, apart, the encode of its frame as version 1 (rows), version 2 (msgpack column blocks),
  version 3 (column blocks of typed chunks, what ships) and an Arrow IPC record batch per
  table (the design not taken), median of passes;
- **loader build**: ``build_batch`` over the log entries of each encoding, in batches of
  ``loader.max_events`` (rows/s; the Arrow IPC line decodes and concatenates record batches
  instead, with no dedupe or quarantine, so it is a lower bound on that design's cost);
- **loader**: the whole loader draining a log of each version into a fresh DuckDB warehouse.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pyarrow as pa

from bench.common import PACKS
from gristmill.collect.pipeline import frame_layout
from gristmill.collect.service import DIALECTS, Prepared
from gristmill.config import Settings
from gristmill.core.envelope import ENVELOPE_COLUMNS, Frame, Layout, encode_frame, encode_row_frame
from gristmill.demo.marketplace import DemoConfig, generate
from gristmill.load.batch import ARROW, TS, build_batch
from gristmill.log.base import LogEntry, LogRecord
from gristmill.pack.models import Pack
from gristmill.runtime import Runtime

_ENVELOPE_ARROW = {
    "schema_version": pa.int64(),
    "occurred_at": TS,
}


def _ipc_schemas(pack: Pack) -> dict[str, pa.Schema]:
    fields = [f for f in ENVELOPE_COLUMNS if f not in ("received_at", "loaded_at", "source")]
    out = {}
    for table in pack.spec.tables:
        cols = [(f, _ENVELOPE_ARROW.get(f, pa.string())) for f in fields]
        cols += [(c.name, ARROW[c.type]) for c in pack.columns(table) if c.promoted]
        out[table] = pa.schema(cols)
    return out


def _encode_ipc(frame: Frame, layout: Layout, schemas: dict[str, pa.Schema]) -> bytes:
    """Design (a): one Arrow IPC record batch per table, inside a msgpack frame."""
    astuple = msgspec.structs.astuple
    groups: dict[str, list[tuple[Any, ...]]] = {}
    for ev in frame.events:
        groups.setdefault(layout[ev.event_type][0], []).append(astuple(ev))
    blocks = []
    for table, rows in groups.items():
        c = list(zip(*rows, strict=True))
        cols = [c[0], c[1], c[2], c[3], c[6], c[7], c[8], c[9], c[10], c[4], c[11]]
        cols += list(zip(*c[5], strict=True))
        sch = schemas[table]
        arrays = [pa.array(v, type=f.type) for v, f in zip(cols, sch, strict=True)]
        rb = pa.RecordBatch.from_arrays(arrays, schema=sch)
        blocks.append((table, rb.serialize().to_pybytes()))
    return msgspec.msgpack.encode(
        (3, frame.pack, frame.source, frame.received_at, blocks, frame.rejects, frame.dialect)
    )


def _build_ipc(bodies: list[bytes], schemas: dict[str, pa.Schema]) -> list[pa.Table]:
    got: dict[str, list[pa.RecordBatch]] = {}
    for body in bodies:
        f = msgspec.msgpack.decode(body)
        for table, buf in f[4]:
            rb = pa.ipc.read_record_batch(pa.py_buffer(buf), schemas[table])
            got.setdefault(table, []).append(rb)
    return [pa.Table.from_batches(b).combine_chunks() for b in got.values()]


def _per_request(fn: Callable[[Any], object], items: list[Any], passes: int = 5) -> float:
    """Median µs per call over ``passes`` passes over ``items`` (garbage collected first)."""
    times = []
    for _ in range(passes):
        gc.collect()
        t0 = time.perf_counter()
        for x in items:
            fn(x)
        times.append((time.perf_counter() - t0) / len(items))
    return statistics.median(times) * 1e6


def _drain(tmp: Path, name: str, records: list[LogRecord]) -> float:
    rt = Runtime(Settings(data_dir=tmp / name, packs_dir=PACKS, packs=["marketplace"]))
    try:
        for i in range(0, len(records), 500):
            rt.log.append(records[i : i + 500])
        t0 = time.perf_counter()
        rt.loader.drain(timeout_s=3600)
        return time.perf_counter() - t0
    finally:
        rt.stop()


def run(events: int) -> dict[str, Any]:
    traffic = generate(DemoConfig(events=events, duplicate_rate=0.02, invalid_rate=0, seed=11))
    out: dict[str, Any] = {"events": len(traffic.events)}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        rt = Runtime(Settings(data_dir=tmp / "c", packs_dir=PACKS, packs=["marketplace"]))
        try:
            pack = rt.packs["marketplace"]
            parser = rt.collector
            native = DIALECTS["native"]
            bodies = [
                orjson.dumps(traffic.events[i : i + 100])
                for i in range(0, len(traffic.events), 100)
            ]
            opened = [parser.open(native, b) for b in bodies]
            prepared: list[Prepared] = [
                parser.frame(native, "marketplace", "bench", o) for o in opened
            ]
            max_events = rt.settings.loader.max_events
        finally:
            rt.stop()
        layout = frame_layout(pack)
        schemas = _ipc_schemas(pack)
        sample = prepared[: min(len(prepared), 500)]
        frames = [p.frame for p in sample]
        out["collector_frame_us"] = _per_request(
            lambda o: parser.frame(native, "marketplace", "bench", o), opened[: len(sample)]
        )
        out["encode_v1_us"] = _per_request(encode_row_frame, frames)
        out["encode_v2_us"] = _per_request(lambda f: encode_frame(f, layout, version=2), frames)
        out["encode_v3_us"] = _per_request(lambda p: p.record(), sample)
        out["encode_ipc_us"] = _per_request(lambda f: _encode_ipc(f, layout, schemas), frames)
        v1 = [
            LogRecord(p.frame.pack, p.frame.source, p.frame.count, p.frame.received_at, b)
            for p, b in ((p, encode_row_frame(p.frame)) for p in prepared)
        ]
        v2 = [
            LogRecord(f.pack, f.source, f.count, f.received_at, encode_frame(f, layout, version=2))
            for f in (p.frame for p in prepared)
        ]
        v3 = [p.record() for p in prepared]
        versions = (("v1", v1), ("v2", v2), ("v3", v3))
        for key, recs in versions:
            out[f"bytes_{key}"] = sum(len(r.body) for r in recs) // len(recs)
        per = max(1, max_events // 100)
        for key, recs in versions:
            gc.collect()
            t0 = time.perf_counter()
            for i in range(0, len(recs), per):
                entries = [LogEntry(j + 1, r) for j, r in enumerate(recs[i : i + per], i)]
                build_batch(entries, {"marketplace": pack}, log_id="b", group="b")
            out[f"build_{key}_s"] = time.perf_counter() - t0
        ipc = [_encode_ipc(p.frame, layout, schemas) for p in prepared]
        gc.collect()
        t0 = time.perf_counter()
        for i in range(0, len(ipc), per):
            _build_ipc(ipc[i : i + per], schemas)
        out["build_ipc_s"] = time.perf_counter() - t0
        for key, recs in versions:
            out[f"loader_{key}_s"] = _drain(tmp, key, recs)
    for k in ("build_ipc", *(f"{s}_{v}" for s in ("build", "loader") for v in ("v1", "v2", "v3"))):
        out[f"{k}_rows_per_s"] = round(out["events"] / out[f"{k}_s"])
        out[f"{k}_s"] = round(out[f"{k}_s"], 2)
    for k in (
        "collector_frame_us",
        "encode_v1_us",
        "encode_v2_us",
        "encode_v3_us",
        "encode_ipc_us",
    ):
        out[k] = round(out[k], 1)
    return out


def render(results: dict[str, Any]) -> str:
    r = results["frames"]
    base = r["collector_frame_us"]
    lines = [
        f"Run {results['when']}: {r['events']:,} demo events (2% re-sent) in 100-event "
        f"requests. Collector: µs per request, median of 5 passes over "
        f"{min(r['events'] // 100, 500)} requests; framing alone (parse, validate, promote) "
        f"{base} µs. Loader: events/s.",
        "",
        "| frame format | encode / request | framing + encode / request | frame bytes "
        "| loader build (`build_batch`) | whole loader into DuckDB |",
        "|---|---|---|---|---|---|",
        f"| version 1: rows (before) | {r['encode_v1_us']} µs | {base + r['encode_v1_us']:.1f} µs "
        f"| {r['bytes_v1']:,} | {r['build_v1_rows_per_s']:,}/s | {r['loader_v1_rows_per_s']:,}/s |",
        f"| version 2: msgpack column blocks | {r['encode_v2_us']} µs "
        f"| {base + r['encode_v2_us']:.1f} µs | {r['bytes_v2']:,} "
        f"| {r['build_v2_rows_per_s']:,}/s | {r['loader_v2_rows_per_s']:,}/s |",
        f"| **version 3: column blocks of typed chunks** (shipped) | {r['encode_v3_us']} µs "
        f"| {base + r['encode_v3_us']:.1f} µs | {r['bytes_v3']:,} "
        f"| {r['build_v3_rows_per_s']:,}/s | {r['loader_v3_rows_per_s']:,}/s |",
        f"| Arrow IPC record batch per table (not taken) | {r['encode_ipc_us']} µs "
        f"| {base + r['encode_ipc_us']:.1f} µs | — | {r['build_ipc_rows_per_s']:,}/s "
        "(decode + concat only) | — |",
    ]
    return "\n".join(lines)
