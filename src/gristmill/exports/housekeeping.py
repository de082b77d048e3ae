"""Governance of stored exports: retention and erasure (called through ExportService).

An export file is a copy of warehouse rows or figures outside the warehouse, so the rules that
govern rows govern it too: past ``exports.retention`` the job and its files go; an erasure
deletes every file whose bytes name the subject — the file cannot be kept without the
identity in it — and says which ones had already been downloaded (beyond reach).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from gristmill.exports.destination import Destination
from gristmill.exports.store import ExportJob, ExportStore

Audit = Callable[..., None]


def _delete_files(dest: Destination, job: ExportJob) -> None:
    for path in (job.csv_path, job.manifest_path):
        if path:
            dest.delete(path)


def expire(
    store: ExportStore, dest: Destination, audit: Audit, cutoff: datetime, *, dry_run: bool
) -> list[str]:
    """Jobs created before ``cutoff`` (running ones are left to finish): files, then rows."""
    gone = [job for job in store.created_before(cutoff) if job.status != "running"]
    if dry_run:
        return [job.id for job in gone]
    for job in gone:
        _delete_files(dest, job)
    ids = [job.id for job in gone]
    store.delete(ids)
    if ids:
        audit("governance", "export.expire", "", jobs=len(ids), before=cutoff.isoformat())
    return ids


def erase_subject(
    store: ExportStore, dest: Destination, audit: Audit, needles: Sequence[bytes]
) -> dict[str, Any]:
    """Files (and jobs) whose bytes contain a needle: ``pending`` were never downloaded,
    ``delivered`` were (that copy is beyond reach); ``scanned`` files in all."""
    out = {"pending": 0, "delivered": 0, "scanned": 0}
    gone: list[str] = []
    for job in store.with_files():
        if job.csv_path is None or not dest.exists(job.csv_path):
            continue
        out["scanned"] += 1
        if not any(n in dest.read(job.csv_path) for n in needles):
            continue
        _delete_files(dest, job)
        gone.append(job.id)
        out["delivered" if job.downloaded_at is not None else "pending"] += 1
    store.delete(gone)
    if gone:
        audit("governance", "export.erase", "", jobs=len(gone))
    return out
