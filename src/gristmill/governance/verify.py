"""Erasures that stay erased: find rows that still name an erased subject, and erase them.

The metadata store keeps erased subjects only as keyed hashes (:mod:`gristmill.core.subjects`),
so a past erasure cannot be searched for by its identifiers. This job goes the other way:
every distinct identity in the pack tables (``user_id``, ``anonymous_id`` and the pack's
``subject_properties``) is hashed with the same key and looked up among the suppressed
subjects. A hit is a row an erasure should have reached and did not: restored from a backup,
written by a tool that bypassed the collector, or missed by an engine (ClickHouse's rewritten
UPDATE skipped rows an earlier UPDATE had rewritten, until 2026-12-07).

With ``repair``, the identities found are erased again by the very steps of a request
(:func:`gristmill.governance.erasure.erase_table`: rows or identity, dedupe keys, the rollup
buckets they fed, then the read-back), in the mode their subject was erased with. The report
names tables and counts, never an identifier. Subjects a pending or running request names are
left to that request.

Cost: one ``DISTINCT`` per identity column per table and per subject property (extracted in
SQL on DuckDB, PostgreSQL and ClickHouse; elsewhere the distinct ``properties`` texts that
mention one are read and decoded here), then one HMAC per distinct value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlglot import exp

from gristmill.core.subjects import SUBJECT_KEYS, Mode, SuppressionSet
from gristmill.governance.erasure import CHUNK, Report, candidates, erase_table, named_ids
from gristmill.pack.models import Pack
from gristmill.sql.ddl import table_ref
from gristmill.sql.types import Logical, json_text, sql_type
from gristmill.warehouse.base import Warehouse


@dataclass(slots=True)
class VerifyReport:
    """What ``erasure verify`` found, per table and mode, in counts only: the report is
    audited and served over the API, so it never names an identifier."""

    repair: bool
    tables: list[dict[str, Any]] = field(default_factory=list)
    """Per table: identities checked; per mode, the erased identifiers still named and the
    rows naming them (each row once, under the strictest mode it names: delete beats
    anonymize); and ``unlocated``, identifiers found whose rows the row search missed."""
    rollups: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows_found(self) -> int:
        return sum(int(f["rows"]) for t in self.tables for f in t["found"])

    @property
    def unlocated(self) -> int:
        return sum(int(t["unlocated"]) for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        return {
            "repair": self.repair,
            "clean": self.rows_found == 0 and self.unlocated == 0,
            "rows_found": self.rows_found,
            "unlocated": self.unlocated,
            "identities_checked": sum(int(t["identities"]) for t in self.tables),
            "tables": self.tables,
            "rollups": self.rollups,
        }


def _values(rows: Iterable[Any]) -> set[str]:
    """As stored (a row is matched by its exact value), blanks left out."""
    return {v for v in rows if isinstance(v, str) and v.strip()}


def identities(wh: Warehouse, pack: Pack, table: str) -> set[str]:
    """Every distinct identity the table's rows carry."""
    ref = table_ref(pack.dataset, table)
    out: set[str] = set()
    for key in SUBJECT_KEYS:
        col = exp.column(key, quoted=True)
        q = exp.select(col).distinct().from_(ref).where(exp.not_(col.copy().is_(exp.null())))
        out |= _values(wh.query(q).column(0).to_pylist())
    props = pack.spec.governance.subject_properties
    extracted = [e for k in props if (e := json_text("properties", k, wh.dialect)) is not None]
    if len(extracted) == len(props):
        for e in extracted:
            q = exp.select(e).distinct().from_(ref).where(exp.not_(e.copy().is_(exp.null())))
            out |= _values(wh.query(q).column(0).to_pylist())
    else:
        # Elsewhere the portable search erasure uses too: the properties as text, decoded
        # here (every row whose properties mention a key is read).
        text = exp.Cast(
            this=exp.column("properties", quoted=True), to=sql_type(Logical.TEXT, wh.dialect)
        )
        params = {f"k{i}": f'%"{k}"%' for i, k in enumerate(props)}
        likes = [exp.Like(this=text.copy(), expression=exp.Placeholder(this=n)) for n in params]
        q = exp.select(text.copy()).distinct().from_(ref).where(exp.or_(*likes))
        for doc in wh.query(q, params).column(0).to_pylist():
            try:
                obj = msgspec.json.decode(str(doc))
            except msgspec.DecodeError:
                continue
            if isinstance(obj, dict):
                out |= _values(obj.get(k) for k in props)
    return out


def _locate(
    wh: Warehouse, pack: Pack, table: str, hits: Mapping[str, Mode]
) -> dict[tuple[Any, ...], set[str]]:
    """The rows naming any of ``hits``: (event id, source, type) -> identifiers named. The
    search is erasure's own (:func:`~gristmill.governance.erasure.candidates`), so what it
    locates is what a repair reaches."""
    cols = ["event_id", "source", "event_type", "user_id", "anonymous_id", "properties"]
    props = pack.spec.governance.subject_properties
    ids = sorted(hits)
    rows: dict[tuple[Any, ...], set[str]] = {}
    for start in range(0, len(ids), CHUNK):
        chunk = frozenset(ids[start : start + CHUNK])
        query, params = candidates(pack, table, sorted(chunk), wh.dialect, cols)
        for r in wh.query(query, params).to_pylist():
            named = named_ids(r, chunk, props)
            if named:
                rows.setdefault((r["event_id"], r["source"], r["event_type"]), set()).update(named)
    return rows


def verify(
    wh: Warehouse, packs: Mapping[str, Pack], suppressed: SuppressionSet, *, repair: bool
) -> VerifyReport:
    """Check (and with ``repair`` erase again) every table of ``packs``; see the module
    docstring. Delete-mode identifiers are repaired first, so a row that names a deleted
    subject and an anonymized one is deleted, as the collector would have dropped it."""
    report = VerifyReport(repair)
    for pack in packs.values():
        for table in pack.spec.tables:
            ids = identities(wh, pack, table)
            hits = {v: m for v in sorted(ids) if (m := suppressed.match([v])) is not None}
            rows = _locate(wh, pack, table, hits) if hits else {}
            located = set().union(*rows.values()) if rows else set()
            found: list[dict[str, Any]] = []
            for mode in (Mode.DELETE, Mode.ANONYMIZE):
                mine = sorted(v for v, m in hits.items() if m is mode)
                if not mine:
                    continue
                strictest = [
                    named
                    for named in rows.values()
                    if min((hits[v] for v in named), key=_strictness) is mode
                ]
                if repair:
                    _repair(wh, pack, table, mine, mode, report)
                found.append({"mode": mode.value, "identifiers": len(mine), "rows": len(strictest)})
            report.tables.append(
                {
                    "table": f"{pack.dataset}.{table}",
                    "identities": len(ids),
                    "found": found,
                    "unlocated": len(set(hits) - located),
                }
            )
    return report


def _strictness(mode: Mode) -> int:
    return 0 if mode is Mode.DELETE else 1


def _repair(
    wh: Warehouse, pack: Pack, table: str, ids: Sequence[str], mode: Mode, out: VerifyReport
) -> None:
    """Erase the identities again with a request's own rows step, a chunk at a time (it
    reads back what it erased, and fails if rows still name one)."""
    for start in range(0, len(ids), CHUNK):
        step = Report(mode)
        erase_table(wh, pack, table, frozenset(ids[start : start + CHUNK]), mode, step)
        out.rollups += step.rollups
