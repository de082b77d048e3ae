"""GDPR Art. 17 erasure as a verifiable job: every place a subject lives, then a receipt.

Order matters, and is what makes the erasure stick:

1. **Suppress first.** The request and the subject's keyed hashes commit together; from then
   on the collector drops (``delete``) or strips (``anonymize``) the subject's new events,
   re-sends, replays and backfills included.
2. **Drain.** Events the log accepted before the suppression are loaded (the job waits until
   the warehouse's offset passes the log's head at request time), so none of them lands
   after the rows are erased.
3. **Rows.** In every pack table, rows naming the subject (``user_id``, ``anonymous_id`` or
   a pack's ``subject_properties``) are deleted, or keep their event without identity; then
   the search runs again, and a row it still finds fails the request.
4. **Derived data.** Rollup buckets those rows fed are recomputed from what remains, so a
   unique-user count drops by the erased user.
5. **Quarantine.** Items whose original bytes contain an identifier are deleted.
6. **Log files.** Consumed records are scrubbed from the embedded log's pages and WAL.

Identifiers live only in this job's memory: the metadata store keeps keyed hashes, and the
report keeps table names and counts.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from sqlglot import exp

from gristmill.core.subjects import Mode, strip_keys
from gristmill.load.batch import dedupe_scope
from gristmill.pack.models import Pack
from gristmill.rollup.spec import recompute
from gristmill.sql.ddl import table_ref
from gristmill.sql.system import QUARANTINE
from gristmill.sql.types import Logical, sql_type
from gristmill.warehouse.base import Warehouse
from gristmill.warehouse.common import in_one_transaction

CHUNK = 200
"""Rows (or buckets) per statement: bound parameters stay well under every engine's cap."""


@dataclass(frozen=True, slots=True)
class Subject:
    user_ids: tuple[str, ...] = ()
    anonymous_ids: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()

    def identifiers(self) -> tuple[str, ...]:
        seen = dict.fromkeys(v.strip() for v in (*self.user_ids, *self.anonymous_ids, *self.emails))
        return tuple(v for v in seen if v)


@dataclass(slots=True)
class Report:
    """The receipt: what was touched, where, how much, and when."""

    mode: Mode
    packs: list[str] = field(default_factory=list)
    """The packs this process serves: the ones whose tables the erasure reached."""
    tables: list[dict[str, Any]] = field(default_factory=list)
    rollups: list[dict[str, Any]] = field(default_factory=list)
    quarantine_items: int = 0
    log: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, int] = field(default_factory=dict)
    """Rows removed from the metadata store (user traits)."""
    exports: dict[str, int] = field(default_factory=dict)
    """Export files deleted because they named the subject: ``pending`` (never downloaded)
    and ``delivered`` (downloaded before the request; that copy is beyond reach)."""
    steps_s: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "packs": self.packs,
            "tables": self.tables,
            "rollups": self.rollups,
            "quarantine_items": self.quarantine_items,
            "log": self.log,
            "metadata": self.metadata,
            "exports": self.exports,
            "steps_s": self.steps_s,
            "rows_total": sum(int(t["rows"]) for t in self.tables),
        }


class ErasureIncomplete(RuntimeError):
    """Rows still name the subject after their statements ran (the request fails, saying so)."""


def _ph(name: str) -> exp.Placeholder:
    return exp.Placeholder(this=name)


def _in(col: str, values: Sequence[str], prefix: str, params: dict[str, Any]) -> exp.Expr:
    names = []
    for i, v in enumerate(values):
        params[f"{prefix}{i}"] = v
        names.append(_ph(f"{prefix}{i}"))
    return exp.In(this=exp.column(col, quoted=True), expressions=names)


def candidates(
    pack: Pack, table: str, ids: Sequence[str], dialect: str, columns: Sequence[str]
) -> tuple[exp.Select, dict[str, Any]]:
    """Rows that may name the subject: identity columns by value, and (when the pack names
    subject properties) the properties text containing an identifier as a JSON string. The
    text match over-approximates; :func:`names_subject` decides exactly."""
    params: dict[str, Any] = {}
    conds: list[exp.Expr] = [
        _in("user_id", ids, "u", params),
        _in("anonymous_id", ids, "a", params),
    ]
    if pack.spec.governance.subject_properties:
        text = exp.Cast(
            this=exp.column("properties", quoted=True), to=sql_type(Logical.TEXT, dialect)
        )
        needles = sorted({n for v in ids for n in spellings(v)})
        for i, needle in enumerate(needles):
            params[f"l{i}"] = f"%{needle}%"
            conds.append(exp.Like(this=text.copy(), expression=_ph(f"l{i}")))
    cols = [exp.column(c, quoted=True) for c in columns]
    return exp.select(*cols).from_(table_ref(pack.dataset, table)).where(exp.or_(*conds)), params


def spellings(value: str) -> set[str]:
    """``LIKE`` patterns for a value as a JSON string, however the writer escaped it: as
    Gristmill writes it (UTF-8), with ``\\uXXXX`` for non-ASCII (Python's default), and with
    ``\\/`` (PHP's). JSON columns that keep the text as written (DuckDB, ClickHouse) hold
    any of them. Backslash escapes in some engines' ``LIKE``: any-char instead."""
    raw = msgspec.json.encode(value).decode()
    ascii_ = json.dumps(value)
    forms = {raw, ascii_, raw.replace("/", "\\/"), ascii_.replace("/", "\\/")}
    return {f.replace("\\", "_") for f in forms}


def named_ids(
    row: Mapping[str, Any], ids: frozenset[str], subject_props: Sequence[str]
) -> set[str]:
    """The identifiers among ``ids`` a row names: its identity columns, and its subject
    properties when they hold that identifier as a string (as the collector matches them: a
    list or an object is no identifier)."""
    out = {v for v in (row.get("user_id"), row.get("anonymous_id")) if v in ids}
    if not subject_props or row.get("properties") is None:
        return out
    try:
        props = msgspec.json.decode(str(row["properties"]))
    except msgspec.DecodeError:
        return out
    if isinstance(props, dict):
        out |= {v for k in subject_props if isinstance(v := props.get(k), str) and v in ids}
    return out


def names_subject(
    row: Mapping[str, Any], ids: frozenset[str], subject_props: Sequence[str]
) -> bool:
    return bool(named_ids(row, ids, subject_props))


def _key(i: int, row: Mapping[str, Any], params: dict[str, Any]) -> exp.Expr:
    params[f"e{i}"], params[f"s{i}"], params[f"t{i}"] = (
        row["event_id"],
        row["source"],
        row["event_type"],
    )
    return exp.and_(
        exp.column("event_id", quoted=True).eq(_ph(f"e{i}")),
        exp.column("source", quoted=True).eq(_ph(f"s{i}")),
        exp.column("event_type", quoted=True).eq(_ph(f"t{i}")),
    )


def delete_rows(
    pack: Pack,
    table: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    exact: tuple[exp.Expr, dict[str, Any]] | None = None,
) -> list[tuple[exp.Expr, dict[str, Any]]]:
    """Delete the subject's rows. ``exact``: the candidate predicate, when every row it
    matched names the subject — then one delete by it (a scan as cheap as the search).
    Else by (event id, source, type) in chunks, with the candidate predicate first so the
    keys are only tested on the few rows passing it."""
    ref = table_ref(pack.dataset, table)
    if exact is not None:
        return [(exp.delete(ref).where(exact[0]), exact[1])]
    out: list[tuple[exp.Expr, dict[str, Any]]] = []
    for start in range(0, len(rows), CHUNK):
        params: dict[str, Any] = {}
        chunk = rows[start : start + CHUNK]
        keys = [_key(i, r, params) for i, r in enumerate(chunk)]
        ids = exp.In(
            this=exp.column("event_id", quoted=True),
            expressions=[_ph(f"e{i}") for i in range(len(chunk))],
        )
        out.append((exp.delete(ref).where(exp.and_(ids, exp.Paren(this=exp.or_(*keys)))), params))
    return out


def anonymize_rows(
    pack: Pack, table: str, rows: Sequence[Mapping[str, Any]], dialect: str
) -> list[tuple[exp.Expr, dict[str, Any]]]:
    """One UPDATE per row: identity nulled, PII keys stripped from properties and context,
    promoted PII columns nulled (the seed's ``event_data - 'email' …``)."""
    pii = pack.spec.governance.pii
    promoted = {c.name for c in pack.columns(table) if c.promoted}
    json_t = sql_type(Logical.JSON, dialect)
    sets: dict[str, exp.Expr] = {
        "user_id": exp.Null(),
        "anonymous_id": exp.Null(),
        "properties": exp.Cast(this=_ph("p"), to=json_t),
        "context": exp.Cast(this=_ph("c"), to=json_t.copy()),
    }
    stripped = pack.spec.governance.stripped_properties
    sets |= {c: exp.Null() for c in stripped if c in promoted}
    payload = pack.spec.enrichment.payload_column
    if payload is not None and payload in {c.name for c in pack.columns(table)}:
        sets[payload] = exp.Null()  # the body as sent holds the identity anonymizing removes
    ref = table_ref(pack.dataset, table)
    out: list[tuple[exp.Expr, dict[str, Any]]] = []
    for r in rows:
        params: dict[str, Any] = {}
        where = _key(0, r, params)
        props = strip_keys(_bytes(r.get("properties")), stripped)
        ctx = strip_keys(_bytes(r.get("context")), pii.context)
        params["p"] = None if props is None else props.decode()
        params["c"] = None if ctx is None else ctx.decode()
        out.append((exp.update(ref, dict(sets), where=where), params))
    return out


def _bytes(v: Any) -> bytes | None:
    if v is None:
        return None
    return v if isinstance(v, bytes) else str(v).encode()


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def delete_dedupe_keys(
    pack: Pack, rows: Sequence[Mapping[str, Any]], dialect: str
) -> list[tuple[exp.Expr, dict[str, Any]]]:
    """The erased rows' dedupe keys (delete mode): the engine's own key expression with the
    row's scope and event id bound in place of its columns."""
    key_of = importlib.import_module(f"gristmill.warehouse.{dialect}.sql").dedupe_key
    ref = table_ref(pack.dataset, "_gm_dedupe")
    out: list[tuple[exp.Expr, dict[str, Any]]] = []
    for start in range(0, len(rows), CHUNK):
        params: dict[str, Any] = {}
        keys: list[exp.Expr] = []
        for i, r in enumerate(rows[start : start + CHUNK]):
            params[f"ks{i}"] = dedupe_scope(pack, str(r["source"]), str(r["event_type"]), r)
            params[f"ke{i}"] = r["event_id"]
            bound = {"_dedupe_scope": f"ks{i}", "event_id": f"ke{i}"}

            def bind(node: exp.Expr, names: dict[str, str] = bound) -> exp.Expr:
                if isinstance(node, exp.Column) and node.name in names:
                    return _ph(names[node.name])
                return node

            keys.append(key_of().transform(bind))
        out.append((exp.delete(ref).where(exp.In(this=exp.column("k"), expressions=keys)), params))
    return out


def touched_buckets(
    pack: Pack, table: str, rows: Sequence[Mapping[str, Any]]
) -> dict[str, list[tuple[Any, ...]]]:
    """rollup -> the (bucket, *dims) keys the rows fed."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    for name, r in pack.spec.rollups.items():
        if r.table != table:
            continue
        keys: dict[tuple[Any, ...], None] = {}
        for row in rows:
            t = _utc(row["occurred_at"])
            if r.grain == "hour":
                b = t.replace(minute=0, second=0, microsecond=0)
            else:
                b = t.replace(hour=0, minute=0, second=0, microsecond=0)
            keys[(b, *(row.get(d) for d in r.dimensions))] = None
        out[name] = list(keys)
    return out


def erase_table(
    wh: Warehouse, pack: Pack, table: str, ids: frozenset[str], mode: Mode, report: Report
) -> None:
    rollup_dims = {d for r in pack.spec.rollups.values() if r.table == table for d in r.dimensions}
    cols = ["event_id", "source", "event_type", "occurred_at", "user_id", "anonymous_id"]
    extra = (rollup_dims | set(pack.spec.dedupe.columns())) - set(cols)
    cols += ["properties", "context", *sorted(extra - {"properties", "context"})]
    query, params = candidates(pack, table, sorted(ids), wh.dialect, cols)
    found = wh.query(query, params).to_pylist()
    gov = pack.spec.governance
    rows = [r for r in found if names_subject(r, ids, gov.subject_properties)]
    where = query.args["where"].this
    # One delete by the search itself only when it is exact by construction (identity
    # columns by value): a text pattern can also match a row loaded meanwhile that merely
    # contains the value, so with subject properties the rows found are deleted by key.
    exact = (where, params) if len(rows) == len(found) and not gov.subject_properties else None
    if not rows:
        report.tables.append({"table": f"{pack.dataset}.{table}", "rows": 0, "action": "none"})
        return
    if mode is Mode.DELETE:
        stmts = delete_rows(pack, table, rows, exact=exact)
        stmts += delete_dedupe_keys(pack, rows, wh.dialect)
    else:
        stmts = anonymize_rows(pack, table, rows, wh.dialect)
    touched = touched_buckets(pack, table, rows)
    for name, keys in touched.items():
        r = pack.spec.rollups[name]
        # One statement per bucket: a plain time range, which the engine prunes (DuckDB's
        # zone maps, PostgreSQL's partitions), beats one scan testing every key per row.
        by_bucket: dict[Any, list[tuple[Any, ...]]] = {}
        for key in keys:
            by_bucket.setdefault(key[0], []).append(key)
        for group in by_bucket.values():
            stmts += recompute(pack, name, r, group, wh.dialect)
    in_one_transaction(wh, stmts)
    # Read back: a receipt says the rows are gone only once the search finds none. An engine
    # that reported a statement as done without doing it (ClickHouse's rewritten UPDATE
    # skipped rows an earlier UPDATE had rewritten, until 2026-12-07) fails the request here.
    left = [
        r
        for r in wh.query(query.copy(), params).to_pylist()
        if names_subject(r, ids, gov.subject_properties)
    ]
    if left:
        raise ErasureIncomplete(
            f"{len(left)} of {len(rows)} rows of {pack.dataset}.{table} still name the subject "
            f"after the {mode.value}: the request is not complete; run it again"
        )
    action = "deleted" if mode is Mode.DELETE else "anonymized"
    report.tables.append({"table": f"{pack.dataset}.{table}", "rows": len(rows), "action": action})
    for name, keys in touched.items():
        report.rollups.append({"rollup": f"{pack.dataset}.{name}", "buckets_recomputed": len(keys)})


def needles(ids: Iterable[str]) -> list[bytes]:
    """Byte strings whose presence in an original item means it names the subject: the
    identifier as sent and as JSON escapes it."""
    out: set[bytes] = set()
    for v in ids:
        out.add(v.encode())
        out.add(msgspec.json.encode(v)[1:-1])
    return sorted(out)


def erase_quarantine(wh: Warehouse, ids: Sequence[str]) -> int:
    """Delete quarantined items whose original bytes contain an identifier (both modes: the
    bytes cannot be kept without the identity in them). A scan of the quarantine, which is
    small by design (items expire after ``quarantine_retention_days``)."""
    wanted = needles(ids)
    rows = wh.query(exp.select("quarantine_id", "raw").from_(QUARANTINE)).to_pylist()
    hits = [
        str(r["quarantine_id"])
        for r in rows
        if r["raw"] is not None and any(n in bytes(r["raw"]) for n in wanted)
    ]
    for start in range(0, len(hits), CHUNK):
        params: dict[str, Any] = {}
        cond = _in("quarantine_id", hits[start : start + CHUNK], "q", params)
        wh.execute(exp.delete(QUARANTINE).where(cond), params)
    return len(hits)


def erase(
    wh: Warehouse,
    packs: Mapping[str, Pack],
    ids: Sequence[str],
    mode: Mode,
    *,
    wait_loaded: Callable[[], dict[str, Any]],
    scrub_log: Callable[[], dict[str, Any]] | None = None,
    forget: Callable[[Sequence[str]], int] | None = None,
    staging: Sequence[tuple[exp.Table, list[str]]] = (),
    exports: Callable[[Sequence[bytes]], dict[str, int]] | None = None,
) -> Report:
    """Run steps 2-6 of the module docstring (the caller has suppressed the subject)."""
    report = Report(mode)
    id_set = frozenset(ids)

    def step(name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        try:
            return fn()
        finally:
            report.steps_s[name] = round(time.perf_counter() - t0, 4)

    report.packs = sorted(packs)
    report.log = step("drain", wait_loaded)
    for pack in packs.values():
        for table in pack.spec.tables:
            t0 = time.perf_counter()
            erase_table(wh, pack, table, id_set, mode, report)
            report.steps_s[f"{pack.name}.{table}"] = round(time.perf_counter() - t0, 4)
    for stage, cols in staging:
        t0 = time.perf_counter()
        params: dict[str, Any] = {}
        cond = exp.or_(*(_in(c, list(ids), f"f{j}_", params) for j, c in enumerate(cols)))
        n = wh.execute(exp.delete(stage).where(cond), params)
        name = f"{stage.db}.{stage.name}"
        report.tables.append({"table": name, "rows": n, "action": "deleted (feed staging)"})
        report.steps_s[name] = round(time.perf_counter() - t0, 4)
    report.quarantine_items = step("quarantine", lambda: erase_quarantine(wh, ids))
    if exports is not None:
        report.exports = step("exports", lambda: exports(needles(ids)))
    if forget is not None:
        report.metadata["user_traits"] = step("metadata", lambda: forget(ids))
    if scrub_log is not None:
        report.log["scrub"] = step("scrub_log", scrub_log)
    return report
