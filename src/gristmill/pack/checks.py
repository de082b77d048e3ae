"""Cross-checks a schema validator cannot express: references between sections and files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema_rs

from gristmill.core.envelope import ENVELOPE_COLUMNS
from gristmill.pack.models import JSON_TYPES, ColumnType, Pack

DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"


@dataclass(frozen=True)
class PackIssue:
    file: Path
    path: tuple[str, ...]
    message: str


def _json_types(prop: dict[str, Any]) -> set[str]:
    t = prop.get("type")
    if isinstance(t, str):
        return {t}
    if isinstance(t, list):
        return {x for x in t if isinstance(x, str)}
    return set()


def check_pack(pack: Pack, file: Path) -> list[PackIssue]:
    spec = pack.spec
    issues: list[PackIssue] = []

    def add(path: tuple[str, ...], msg: str, where: Path = file) -> None:
        issues.append(PackIssue(where, path, msg))

    routed: dict[str, set[str]] = {t: set() for t in spec.tables}
    enriched = set(spec.enrichment.columns())
    for t_name in spec.tables:
        routed[t_name] |= enriched & set(spec.tables[t_name].columns)
    issues += _check_enrichment(pack)
    issues += _check_dedupe(pack)
    for et_name, et in spec.event_types.items():
        base = ("event_types", et_name)
        if et.category not in spec.categories:
            add(
                (*base, "category"),
                f"unknown category {et.category!r} "
                f"(declared: {', '.join(sorted(spec.categories))})",
            )
        if et.table not in spec.tables:
            add(
                (*base, "table"),
                f"unknown table {et.table!r} (declared: {', '.join(sorted(spec.tables))})",
            )
            continue
        table = spec.tables[et.table]
        for i, col in enumerate(et.promote):
            routed[et.table].add(col)
            if col not in table.columns:
                add((*base, "promote", str(i)), f"{col!r} is not a column of table {et.table!r}")
        if et.entity and et.entity.id_property not in et.promote:
            add(
                (*base, "entity", "id_property"), f"{et.entity.id_property!r} must also be promoted"
            )
        for version, doc in pack.schemas.get(et_name, {}).items():
            sfile = pack.root / "schemas" / et_name / f"{version}.json"
            issues += _check_schema(doc, sfile)
            props = doc.get("properties", {}) if isinstance(doc, dict) else {}
            for i, col in enumerate(et.promote):
                if col not in table.columns:
                    continue
                prop = props.get(col)
                if not isinstance(prop, dict):
                    add((*base, "promote", str(i)), f"{col!r} is not a property in {sfile}")
                    continue
                want = JSON_TYPES[table.columns[col].type]
                have = _json_types(prop) - {"null"}
                if not have or not have <= want:
                    add(
                        (*base, "promote", str(i)),
                        f"property {col!r} has JSON type {sorted(have) or 'unspecified'} in "
                        f"{sfile}, which cannot fill a {table.columns[col].type} column",
                    )

    for t_name, table in spec.tables.items():
        base = ("tables", t_name)
        if t_name in ("_gristmill",) or t_name.startswith("_gm"):
            add(base, "table names starting with _gm are reserved")
        if not any(et.table == t_name for et in spec.event_types.values()):
            add(base, "no event type is routed to this table")
        for c in table.columns:
            if c in ENVELOPE_COLUMNS:
                add((*base, "columns", c), f"{c!r} is an envelope column; choose another name")
            elif c not in routed[t_name]:
                add(
                    (*base, "columns", c),
                    "no event type routed here promotes this column, so it would always be null",
                )
        for i, c in enumerate(table.cluster_by):
            if c not in table.columns and c not in ENVELOPE_COLUMNS:
                add((*base, "cluster_by", str(i)), f"{c!r} is not a column of {t_name!r}")
        if len(table.cluster_by) > 4:
            add((*base, "cluster_by"), "at most 4 clustering keys (BigQuery's limit)")
    return issues


def _check_schema(doc: Any, sfile: Path) -> list[PackIssue]:
    out: list[PackIssue] = []
    if not isinstance(doc, dict):
        return [PackIssue(sfile, (), "a schema must be a JSON object")]
    if doc.get("$schema") != DRAFT_2020_12:
        out.append(PackIssue(sfile, ("$schema",), f"must be {DRAFT_2020_12!r}"))
    if doc.get("type") != "object":
        out.append(PackIssue(sfile, ("type",), "event properties must be an object schema"))
    try:
        jsonschema_rs.meta.validate(doc)
    except jsonschema_rs.ValidationError as exc:
        path = tuple(str(p) for p in exc.instance_path)
        out.append(PackIssue(sfile, path, f"not a valid JSON Schema: {exc.message}"))
    return out


def _check_enrichment(pack: Pack) -> list[PackIssue]:
    """Enrichment columns exist, with the type their values have, in every table an event
    type routes to (a table without one simply is not enriched there)."""
    spec = pack.spec
    en = spec.enrichment
    issues: list[PackIssue] = []
    want: dict[str, tuple[ColumnType, tuple[str, ...]]] = {}
    if en.category_column:
        want[en.category_column] = (ColumnType.STRING, ("enrichment", "category_column"))
    if en.received_column:
        want[en.received_column] = (ColumnType.TIMESTAMP, ("enrichment", "received_column"))
    if en.payload_column:
        want[en.payload_column] = (ColumnType.JSON, ("enrichment", "payload_column"))
    for key, ce in (("user_agent", en.user_agent), ("geo", en.geo)):
        if ce is not None:
            want[ce.column] = (ColumnType.JSON, ("enrichment", key, "column"))
    if en.traits is not None:
        for col in en.traits.columns:
            want[col] = (ColumnType.STRING, ("enrichment", "traits", "columns", col))
        if en.traits.tenure_column:
            want[en.traits.tenure_column] = (
                ColumnType.INT64,
                ("enrichment", "traits", "tenure_column"),
            )
        for i, et in enumerate(en.traits.from_events):
            if et not in spec.event_types:
                issues.append(
                    PackIssue(
                        pack.root / "pack.yaml",
                        ("enrichment", "traits", "from_events", str(i)),
                        f"unknown event type {et!r}",
                    )
                )
    if en.pricing is not None:
        want[en.pricing.column] = (ColumnType.INT64, ("enrichment", "pricing", "column"))
    for col in en.log_bins:
        want[col] = (ColumnType.INT64, ("enrichment", "log_bins", col))
    for col, (ctype, path) in want.items():
        tables = [t for t, table in spec.tables.items() if col in table.columns]
        if not tables:
            issues.append(
                PackIssue(pack.root / "pack.yaml", path, f"{col!r} is not a column of any table")
            )
        for t in tables:
            have = spec.tables[t].columns[col].type
            if have is not ctype:
                issues.append(
                    PackIssue(
                        pack.root / "pack.yaml",
                        path,
                        f"{t}.{col} is {have}; enrichment fills a {ctype} column",
                    )
                )
    return issues


def _check_dedupe(pack: Pack) -> list[PackIssue]:
    """A column in the dedupe scope is promoted by every event type, so every row has it
    (a key built from a missing value would merge unrelated events)."""
    spec = pack.spec
    out: list[PackIssue] = []
    for i, col in enumerate(spec.dedupe.scope):
        if col in ("source", "event_type"):
            continue
        missing = [et for et, e in spec.event_types.items() if col not in e.promote]
        if missing:
            out.append(
                PackIssue(
                    pack.root / "pack.yaml",
                    ("dedupe", "scope", str(i)),
                    f"{col!r} is not promoted by event types {', '.join(sorted(missing))}; "
                    "a scope column must be in every row",
                )
            )
    return out
