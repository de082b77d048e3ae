"""Produce one job's files (CSV, then ``manifest.json`` beside it) and reconcile them.

An attempt always writes the whole CSV again under a temporary name and moves it into place:
the rows are cut at the job's watermark and read in a fixed order, so a second attempt —
after a crash mid-file — writes the same bytes as an uninterrupted first one would have.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from gristmill.core.clock import iso, now_us
from gristmill.exports import report
from gristmill.exports.csvout import CsvSink, read_rows, read_totals
from gristmill.exports.destination import Destination
from gristmill.exports.rows import RowsSlice, chunks, export_columns, sums, total_columns
from gristmill.exports.store import ExportJob
from gristmill.metrics.model import Condition
from gristmill.pack.exports import MetricsExportSpec, RowsExportSpec
from gristmill.pack.models import Pack
from gristmill.warehouse.base import Warehouse

Cut = Callable[[Pack, Sequence[str]], tuple[int | None, int | None]]
"""(pack, tables) -> (newest load time, newest event time) in µs, from the freshness table."""


class Superseded(RuntimeError):
    """Another worker took the job over (this one was presumed dead): stop writing."""


def _safe(value: str) -> str:
    """A scope value as one path segment: letters, digits, ``-`` and ``_`` kept, every other
    byte %-escaped (no ``/``, no ``..``, nothing a file system or S3 reads specially)."""
    out = []
    for b in value.encode("utf-8"):
        ch = chr(b)
        out.append(ch if ch.isascii() and (ch.isalnum() or ch in "-_") else f"%{b:02X}")
    return "".join(out) or "%00"


def object_keys(
    pack: str,
    export: str,
    period: str,
    job_id: str,
    scope: Mapping[str, str],
    prefix_by: str | None,
) -> tuple[str, str]:
    """Keys of the CSV and the manifest, ``<tenant>/<pack>/<export>/<period>/<job id>/…``:
    each tenant's files under its own prefix (``_all`` when not for one tenant)."""
    tenant = "_all"
    if prefix_by is not None and prefix_by in scope:
        tenant = _safe(scope[prefix_by])
    base = f"{tenant}/{pack}/{export}/{_safe(period)}/{job_id}"
    return f"{base}/{export}_{_safe(period)}.csv", f"{base}/manifest.json"


def conditions(raw: Sequence[Sequence[Any]]) -> tuple[Condition, ...]:
    return tuple(
        Condition(str(c), str(op), tuple(v) if isinstance(v, list) else v) for c, op, v in raw
    )


@dataclass
class Runner:
    wh: Warehouse
    dest: Destination
    cut: Cut
    chunk_rows: int
    heartbeat: Callable[[], bool]
    pause_s: float = 0.0

    def _beat(self) -> None:
        if not self.heartbeat():
            raise Superseded("another worker owns this job now")
        if self.pause_s:
            time.sleep(self.pause_s)  # test-only hook (ExportSettings.test_chunk_pause_s)

    def produce(
        self, pack: Pack, spec: RowsExportSpec | MetricsExportSpec, job: ExportJob
    ) -> dict[str, Any]:
        """Write the CSV and its manifest; return the job's result columns."""
        csv_path, manifest_path = job.csv_path, job.manifest_path
        assert csv_path is not None
        assert manifest_path is not None
        name = csv_path.rsplit("/", 1)[-1]
        extra: dict[str, Any] = {}
        with self.dest.writer(csv_path) as fh:
            if isinstance(spec, RowsExportSpec):
                cols = export_columns(pack, spec)
                sink = CsvSink([c.name for c in cols], total_columns(cols))
                fh.write(sink.header())
                for chunk in chunks(
                    self.wh, self.rows_slice(pack, spec, job), cols, self.chunk_rows
                ):
                    fh.write(sink.encode(chunk))
                    self._beat()
                watermark = (job.watermark_us, job.newest_event_us)
            else:
                period = self.period(spec, job)
                sink = CsvSink(report.columns(spec), list(spec.metrics))
                fh.write(sink.header())
                body, watermark = self._consistent(
                    pack, spec, lambda: report.rows(self.wh, pack, spec, period, self.scope(job))
                )
                for i in range(0, max(len(body), 1), self.chunk_rows):
                    fh.write(sink.encode(body[i : i + self.chunk_rows]))
                    self._beat()
                extra = {
                    "period_start": period.start.isoformat().replace("+00:00", "Z"),
                    "period_end": period.end.isoformat().replace("+00:00", "Z"),
                    "month_to_date": period.to_date,
                    "timezone": spec.tz,
                }
        manifest = {
            "format": "csv",
            "pack": job.pack,
            "export": job.export,
            "kind": job.kind,
            "job_id": job.id,
            "scope": job.scope,
            "period": job.period,
            "params": job.params,
            "file": name,
            "columns": list(sink.columns),
            "rows": sink.rows,
            "bytes": sink.size,
            "totals": sink.totals,
            "sha256": sink.sha256,
            "watermark": {
                "loaded_through": None if watermark[0] is None else iso(watermark[0]),
                "newest_event_at": None if watermark[1] is None else iso(watermark[1]),
            },
            "created_at": job.created_at.isoformat().replace("+00:00", "Z"),
            **extra,
        }
        self.dest.put(manifest_path, json.dumps(manifest, indent=2, sort_keys=True).encode())
        return {
            "rows": sink.rows,
            "bytes": sink.size,
            "totals": sink.totals,
            "checksum": sink.sha256,
        }

    # -- what a job means --------------------------------------------------------------------
    @staticmethod
    def scope(job: ExportJob) -> tuple[Condition, ...]:
        return tuple(Condition(c, "eq", v) for c, v in sorted(job.scope.items()))

    def rows_slice(self, pack: Pack, spec: RowsExportSpec, job: ExportJob) -> RowsSlice:
        p = job.params
        return RowsSlice(
            pack,
            spec.table,
            datetime.fromisoformat(p["start"]),
            datetime.fromisoformat(p["end"]),
            job.watermark_us,
            (*self.scope(job), *conditions(p.get("filters", []))),
        )

    @staticmethod
    def period(spec: MetricsExportSpec, job: ExportJob) -> report.Period:
        p = job.params
        return report.Period(
            job.period,
            datetime.fromisoformat(p["period_start"]),
            datetime.fromisoformat(p["period_end"]),
            bool(p.get("month_to_date")),
        )

    def _consistent(
        self, pack: Pack, spec: MetricsExportSpec, answer: Callable[[], Any]
    ) -> tuple[Any, tuple[int | None, int | None]]:
        """Metric answers come from rollups, which know no load time to cut at: answer
        between two reads of the watermark and repeat if a load landed in between, so the
        manifest names the watermark the numbers are exactly as of."""
        tables = _tables(pack, spec)
        for _ in range(5):
            before = self.cut(pack, tables)
            out = answer()
            if self.cut(pack, tables) == before:
                return out, before
        return out, self.cut(pack, tables)

    # -- reconciliation ----------------------------------------------------------------------
    def reconcile(
        self, pack: Pack, spec: RowsExportSpec | MetricsExportSpec, job: ExportJob
    ) -> dict[str, Any]:
        """Totals parsed back from the stored CSV against the source's, to the unit."""
        if job.csv_path is None or not self.dest.exists(job.csv_path):
            return {"reconciled": False, "error": "the export file is gone (expired or deleted)"}
        if isinstance(spec, RowsExportSpec):
            cols = total_columns(export_columns(pack, spec))
            n_csv, csv_totals = read_totals(self.dest.chunks(job.csv_path), cols)
            n_src, src_totals = sums(self.wh, self.rows_slice(pack, spec, job), cols)
            source = "warehouse rows (same window, scope, filters and cut)"
            wm = (job.watermark_us, job.newest_event_us)
            compared = {"rows": (n_csv, n_src)} | {c: (csv_totals[c], src_totals[c]) for c in cols}
        else:
            period = self.period(spec, job)
            _, csv_totals = read_totals(self.dest.chunks(job.csv_path), list(spec.metrics))
            src_totals, wm = self._consistent(
                pack, spec, lambda: report.totals(self.wh, pack, spec, period, self.scope(job))
            )
            source = "metric layer totals (same period and scope)"
            compared = {c: (csv_totals.get(c, 0), src_totals[c]) for c in spec.metrics}
            restated = self._restated(pack, spec, job, period)
        columns = {
            c: {"csv": a, "expected": b, "difference": a - b} for c, (a, b) in compared.items()
        }
        differences = {c: v for c, v in columns.items() if v["difference"] != 0}
        out = {
            "reconciled": not differences,
            "source": source,
            "columns": columns,
            "differences": differences,
            "checked_at": iso(now_us()),
            "watermark": None if wm[0] is None else iso(wm[0]),
        }
        if not isinstance(spec, RowsExportSpec):
            out["restated"] = restated[:MAX_RESTATED]
            out["restated_buckets"] = len(restated)
        return out

    def _restated(
        self, pack: Pack, spec: MetricsExportSpec, job: ExportJob, period: report.Period
    ) -> list[dict[str, Any]]:
        """Rows of the stored file whose figures the data now says differently (late events
        landed after the export's watermark, an erasure, a reprice): the file stays as it was
        — reproducible at its watermark — and the restatement is listed, cell by cell."""
        assert job.csv_path is not None
        header, stored = read_rows(self.dest.chunks(job.csv_path))
        keys = [spec.grain, *spec.group_by]
        k = len(keys)
        now = {
            tuple(r[:k]): r[k:] for r in report.rows(self.wh, pack, spec, period, self.scope(job))
        }
        old = {tuple(r[:k]): r[k:] for r in stored}
        names = header[k:]
        out: list[dict[str, Any]] = []
        for key in sorted(set(now) | set(old)):
            a, b = old.get(key), now.get(key)
            if a == b:
                continue
            changes = {
                n: {"exported": _num(a[i] if a else ""), "now": _num(b[i] if b else "")}
                for i, n in enumerate(names)
                if (a[i] if a else "") != (b[i] if b else "")
            }
            out.append(dict(zip(keys, key, strict=True)) | {"changes": changes})
        return out


MAX_RESTATED = 1000
"""Restated rows listed in one reconciliation (the count is always complete)."""


def _num(v: str) -> int | None:
    return int(v) if v else None


def _tables(pack: Pack, spec: MetricsExportSpec) -> list[str]:
    out: list[str] = []
    for m in spec.metrics.values():
        t = pack.spec.metrics[m].table
        if t is not None and t not in out:
            out.append(t)
    return out


def period_params(period: report.Period) -> dict[str, Any]:
    return {
        "period_start": period.start.isoformat(),
        "period_end": period.end.isoformat(),
        "month_to_date": period.to_date,
    }


def stream(
    wh: Warehouse, s: RowsSlice, cols: Sequence[Any], size: int, totals_of: Sequence[str]
) -> Iterator[bytes]:
    """A rows export answered at once: the same bytes a job would write."""
    sink = CsvSink([c.name for c in cols], totals_of)
    yield sink.header()
    for chunk in chunks(wh, s, cols, size):
        yield sink.encode(chunk)
