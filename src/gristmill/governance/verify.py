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

Cost: one ``DISTINCT`` per identity column per table, and for packs with subject properties
the distinct ``properties`` texts that mention one of them, hashed in this process.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from sqlglot import exp

from gristmill.core.subjects import SUBJECT_KEYS, Mode, SuppressionSet
from gristmill.governance.erasure import CHUNK, Report, candidates, erase_table, names_subject
from gristmill.pack.models import Pack
from gristmill.sql.ddl import table_ref
from gristmill.sql.types import Logical, sql_type
from gristmill.warehouse.base import Warehouse


@dataclass(slots=True)
class VerifyReport:
    repair: bool
    tables: list[dict[str, Any]] = field(default_factory=list)
    """Per table: identities checked, and per mode the erased subjects still named and
    their rows (repaired, with ``repair``)."""
    rollups: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rows_found(self) -> int:
        return sum(int(f["rows"]) for t in self.tables for f in t["found"])

    def as_dict(self) -> dict[str, Any]:
        return {
            "repair": self.repair,
            "clean": self.rows_found == 0,
            "rows_found": self.rows_found,
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
    if props:
        # The portable search erasure uses too: the properties as text, then JSON here.
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


def _count(wh: Warehouse, pack: Pack, table: str, ids: Sequence[str]) -> int:
    cols = ["user_id", "anonymous_id", "properties"]
    props = pack.spec.governance.subject_properties
    n = 0
    for start in range(0, len(ids), CHUNK):
        chunk = ids[start : start + CHUNK]
        query, params = candidates(pack, table, chunk, wh.dialect, cols)
        wanted = frozenset(chunk)
        n += sum(names_subject(r, wanted, props) for r in wh.query(query, params).to_pylist())
    return n


def verify(
    wh: Warehouse, packs: Mapping[str, Pack], suppressed: SuppressionSet, *, repair: bool
) -> VerifyReport:
    report = VerifyReport(repair)
    for pack in packs.values():
        for table in pack.spec.tables:
            ids = identities(wh, pack, table)
            by_mode: dict[Mode, list[str]] = {}
            for v in sorted(ids):
                mode = suppressed.match([v])
                if mode is not None:
                    by_mode.setdefault(mode, []).append(v)
            found: list[dict[str, Any]] = []
            for mode, hits in sorted(by_mode.items()):
                if repair:
                    rows = _repair(wh, pack, table, hits, mode, report)
                else:
                    rows = _count(wh, pack, table, hits)
                found.append({"mode": mode.value, "subjects": len(hits), "rows": rows})
            report.tables.append(
                {"table": f"{pack.dataset}.{table}", "identities": len(ids), "found": found}
            )
    return report


def _repair(
    wh: Warehouse, pack: Pack, table: str, ids: Sequence[str], mode: Mode, out: VerifyReport
) -> int:
    """Erase the identities again, a chunk per request-sized step; rows erased."""
    rows = 0
    for start in range(0, len(ids), CHUNK):
        step = Report(mode)
        erase_table(wh, pack, table, frozenset(ids[start : start + CHUNK]), mode, step)
        rows += sum(int(t["rows"]) for t in step.tables)
        out.rollups += step.rollups
    return rows
