"""Segment's non-track calls (identify, page, screen, group, alias) land in a table by default.

A Segment client is answered 200 whatever happens to its events, so a pack that maps only
track events used to quarantine every ``identify`` as ``unmapped`` without anyone noticing.
A pack that maps Segment events now gets, unless it says otherwise::

    mappings:
      traits_table:             # the engine default, spelled out
        table: segment_calls    # one row per call; traits / page properties in `properties`
        category: traits        # a declared category; `traits` undeclared: the engine's own
                                #   (retention 400 days)

The calls become event types ``segment.identify``, ``segment.page``, ``segment.screen``,
``segment.group`` and ``segment.alias`` (schema: any object), and ``$identify`` … map to them
unless the pack maps a call itself. ``traits_table: false`` keeps the old behaviour (the
``unmapped`` policy). Everything is added to the spec before the cross-checks, so DDL,
provisioning, retention, erasure and the SDK see an ordinary table.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from gristmill.pack.mapping import EventMapping
from gristmill.pack.models import CategorySpec, EventTypeSpec, PackSpec, TableSpec

CALLS = ("identify", "page", "screen", "group", "alias")
DEFAULT_CATEGORY = "traits"
DEFAULT_RETENTION = timedelta(days=400)
ANY_OBJECT: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "A Segment call's traits or properties, as sent",
    "type": "object",
}


def event_type_of(call: str) -> str:
    return f"segment.{call}"


def with_segment_calls(
    spec: PackSpec, schemas: dict[str, dict[int, dict[str, Any]]]
) -> tuple[PackSpec, list[tuple[tuple[str, ...], str]]]:
    """The spec with the traits table added (and ``schemas`` filled in place), plus the
    problems found (path, message); the spec is returned unchanged when it does not apply."""
    decl = spec.mappings.traits_table
    if decl is False or (decl is None and not spec.mappings.segment):
        return spec, []
    table = decl.table if decl else "segment_calls"
    category = decl.category if decl and decl.category else DEFAULT_CATEGORY
    path = ("mappings", "traits_table")
    problems: list[tuple[tuple[str, ...], str]] = []
    if table in spec.tables:
        problems.append(
            (
                path,
                f"table {table!r} is declared by the pack; name another table here, or map "
                "the calls ($identify …) to event types of your table",
            )
        )
    pending = [c for c in CALLS if f"${c}" not in spec.mappings.segment]
    for c in pending:
        if event_type_of(c) in spec.event_types:
            problems.append((path, f"event type {event_type_of(c)!r} is declared by the pack"))
    if problems:
        return spec, problems
    categories = dict(spec.categories)
    if category not in categories:
        if category != DEFAULT_CATEGORY:
            known = ", ".join(sorted(categories))
            return spec, [(path, f"unknown category {category!r} (declared: {known})")]
        categories[category] = CategorySpec(
            description="Segment identify/page/screen/group/alias calls (engine default).",
            retention=DEFAULT_RETENTION,
        )
    event_types = dict(spec.event_types)
    segment = dict(spec.mappings.segment)
    for c in pending:
        name = event_type_of(c)
        event_types[name] = EventTypeSpec(
            description=f"A Segment {c} call (mappings.traits_table).",
            category=category,
            table=table,
            versions=[1],
        )
        segment[f"${c}"] = EventMapping(event_type=name)
        schemas[name] = {1: dict(ANY_OBJECT)}
    if not pending:
        return spec, []
    tables = {
        **spec.tables,
        table: TableSpec(
            description="Segment calls besides track.", cluster_by=["user_id", "event_type"]
        ),
    }
    mappings = spec.mappings.model_copy(update={"segment": segment})
    return (
        spec.model_copy(
            update={
                "categories": categories,
                "event_types": event_types,
                "tables": tables,
                "mappings": mappings,
            }
        ),
        [],
    )
