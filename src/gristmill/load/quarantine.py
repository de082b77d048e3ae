"""Quarantine: list what was not loaded, and replay it through the collector again.

A replay re-reads the original bytes with the pack as it is now (a fixed schema, a newly
mapped event type), appends the result as a new frame of the same source, and stamps the
quarantine rows ``replayed_at``. Replaying twice is harmless: the events dedupe.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from gristmill.collect.service import Collector, Prepared
from gristmill.core.clock import from_datetime, iso
from gristmill.core.errors import Problem
from gristmill.sql.system import QUARANTINE
from gristmill.warehouse.base import Warehouse

LIST_COLUMNS = (
    "quarantine_id",
    "pack",
    "source",
    "dialect",
    "reason",
    "detail",
    "errors",
    "event_id",
    "event_type",
    "received_at",
    "quarantined_at",
    "replayed_at",
    "resends",
    "last_seen_at",
)


@dataclass(frozen=True, slots=True)
class QuarantineFilter:
    pack: str | None = None
    source: str | None = None
    reason: str | None = None
    include_replayed: bool = False
    ids: tuple[str, ...] = ()


def _where(f: QuarantineFilter) -> tuple[exp.Expr | None, dict[str, Any]]:
    conds: list[exp.Expr] = []
    params: dict[str, Any] = {}
    for name in ("pack", "source", "reason"):
        value = getattr(f, name)
        if value is not None:
            conds.append(exp.column(name).eq(exp.Placeholder(this=name)))
            params[name] = value
    if not f.include_replayed:
        conds.append(exp.column("replayed_at").is_(exp.null()))
    if f.ids:
        conds.append(
            exp.column("quarantine_id").isin(
                *[exp.Placeholder(this=f"id{i}") for i in range(len(f.ids))]
            )
        )
        params.update({f"id{i}": v for i, v in enumerate(f.ids)})
    where: exp.Expr | None = exp.and_(*conds) if conds else None
    return where, params


def list_quarantine(
    wh: Warehouse,
    f: QuarantineFilter,
    *,
    limit: int = 100,
    after: str | None = None,
    with_raw: bool = False,
) -> list[dict[str, Any]]:
    """Rows ordered by id; ``after`` is the last id of the previous page (keyset paging)."""
    where, params = _where(f)
    cols = [*LIST_COLUMNS, "raw"] if with_raw else list(LIST_COLUMNS)
    q = exp.select(*[exp.column(c, quoted=True) for c in cols]).from_(QUARANTINE)
    if where is not None:
        q = q.where(where)
    if after:
        q = q.where(
            exp.GT(this=exp.column("quarantine_id"), expression=exp.Placeholder(this="after"))
        )
        params["after"] = after
    q = q.order_by("quarantine_id").limit(exp.Placeholder(this="limit"))
    params["limit"] = limit
    rows: list[dict[str, Any]] = wh.query(q, params).to_pylist()
    for r in rows:
        r["resends"] = r["resends"] or 1  # rows from before resends were counted
        for tcol in ("received_at", "quarantined_at", "replayed_at", "last_seen_at"):
            if r[tcol] is not None:
                r[tcol] = iso(from_datetime(r[tcol]))
        if with_raw:
            raw: bytes = r.pop("raw")
            try:
                r["raw"] = raw.decode("utf-8")
                r["raw_encoding"] = "utf-8"
            except UnicodeDecodeError:
                r["raw"] = base64.b64encode(raw).decode()
                r["raw_encoding"] = "base64"
    return rows


def count_quarantine(wh: Warehouse, f: QuarantineFilter) -> dict[str, int]:
    """Rows per reason."""
    where, params = _where(f)
    q = (
        exp.select("reason", exp.alias_(exp.func("count", exp.Star()), "n"))
        .from_(QUARANTINE)
        .group_by("reason")
    )
    if where is not None:
        q = q.where(where)
    return {str(row["reason"]): int(row["n"]) for row in wh.query(q, params).to_pylist()}


@dataclass(frozen=True, slots=True)
class ReplayResult:
    replayed: int
    accepted: int
    rejected: int
    failed: int = 0
    """Rows that could not be replayed here (left as they are)."""


def replay(
    wh: Warehouse, collector: Collector, f: QuarantineFilter, *, limit: int = 10_000
) -> ReplayResult:
    rows = list_quarantine(wh, f, limit=limit, with_raw=True)
    frames: list[Prepared] = []
    seen: dict[int, list[str]] = {}
    """Replayed ids by the ``resends`` they had when read (see :func:`_mark_replayed`)."""
    accepted = rejected = failed = 0
    for r in rows:
        raw = r["raw"].encode() if r["raw_encoding"] == "utf-8" else base64.b64decode(r["raw"])
        if r["pack"] not in collector.packs:
            failed += 1  # a pack this server does not serve: leave the row for one that does
            continue
        try:
            prepared = collector.prepare_replay(
                pack=r["pack"], source=r["source"], dialect=r["dialect"], raw=raw
            )
        except Problem:
            failed += 1
            continue
        frames.append(prepared)
        seen.setdefault(int(r["resends"]), []).append(r["quarantine_id"])
        accepted += len(prepared.frame.events)
        rejected += len(prepared.frame.rejects)
    if frames:
        collector.log.append([p.record() for p in frames])
        for resends, ids in seen.items():
            _mark_replayed(wh, ids, resends)
    return ReplayResult(len(frames), accepted, rejected, failed)


def _mark_replayed(wh: Warehouse, ids: Sequence[str], resends: int) -> None:
    """Hide the replayed rows from the open quarantine — each only if its ``resends`` is still
    what the replay read.

    The replay's frames are durable in the log before this runs (a crash in between re-sends
    them; dedupe keeps that once), so a running loader may already have loaded them. A body
    still rejected merges into its open row (``merge_quarantine``: same pack, source and
    body), adding one to ``resends``; marking that row replayed now would hide the reject the
    replay just made. Such a row stays open, its count saying it was sent again."""
    stmt = exp.update(
        QUARANTINE,
        {"replayed_at": exp.CurrentTimestamp()},
        where=exp.and_(
            exp.column("quarantine_id").isin(
                *[exp.Placeholder(this=f"id{i}") for i in range(len(ids))]
            ),
            exp.Coalesce(this=exp.column("resends"), expressions=[exp.Literal.number(1)]).eq(
                exp.Placeholder(this="resends")
            ),
        ),
    )
    wh.execute(stmt, {"resends": resends} | {f"id{i}": v for i, v in enumerate(ids)})


def replay_ids(ids: Sequence[str]) -> QuarantineFilter:
    return QuarantineFilter(ids=tuple(ids))
