"""Cross-checks of ``lifecycle`` and ``track`` views against the table they read."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gristmill.pack.analytics import ViewSpec
from gristmill.pack.checks import PackIssue
from gristmill.pack.checks_analytics import check_filter, column_types
from gristmill.pack.models import ENVELOPE_TYPES, ColumnType, Pack

NUMERIC = frozenset({ColumnType.INT64, ColumnType.FLOAT64})
Issue = tuple[tuple[str, ...], str]


def check_entity_views(pack: Pack, file: Path) -> list[PackIssue]:
    out: list[PackIssue] = []
    for name, view in pack.spec.views.items():
        out += [PackIssue(file, p, m) for p, m in check_entity_view(pack, view, ("views", name))]
    return out


def check_entity_view(pack: Pack, view: ViewSpec, base: tuple[str, ...]) -> list[Issue]:
    """The table exists; the entity, position and step columns are its columns; every
    dimension a caller may filter, group or scope by is one of the table's dimensions (the
    allowlist request values are checked against)."""
    spec = view.lifecycle or view.track
    if spec is None:
        return []
    kind = "lifecycle" if view.lifecycle is not None else "track"
    at = (*base, kind)
    if spec.table not in pack.spec.tables:
        return [((*at, "table"), f"unknown table {spec.table!r}")]
    cols = column_types(pack, spec.table)
    dims = set(pack.spec.tables[spec.table].dimensions)
    out: list[Issue] = []
    if spec.entity not in cols or (spec.entity in ENVELOPE_TYPES and spec.entity != "entity_id"):
        out.append(((*at, "entity"), f"{spec.entity!r} is not a declared column of {spec.table}"))
    for key, names in (("by", spec.by), ("filters", spec.filters)):
        for d in names:
            if d not in dims:
                out.append(((*at, key), f"{d!r} is not a dimension of {spec.table}"))
    for param, col in view.path.items():
        if col not in dims:
            out.append(((*base, "path", param), f"{col!r} is not a dimension of {spec.table}"))
    roles = [pack.spec.roles[r] for r in view.roles if r in pack.spec.roles]
    scoped = set(view.scope) | {c for r in roles for c in r.scope}
    for col in scoped:
        if col not in cols:
            out.append(((*base, "roles"), f"{spec.table} cannot be limited by {col!r}"))
    if view.lifecycle is not None:
        for step, filt in view.lifecycle.steps.items():
            out += check_filter(filt, cols, (*at, "steps", step))
        try:
            ZoneInfo(view.lifecycle.tz)
        except (ZoneInfoNotFoundError, ValueError):
            out.append(((*at, "tz"), f"unknown time zone {view.lifecycle.tz!r}"))
    if view.track is not None:
        for key in ("lat", "lon"):
            col = getattr(view.track, key)
            if cols.get(col) not in NUMERIC:
                out.append(((*at, key), f"{col!r} is not a numeric column of {spec.table}"))
        out += check_filter(view.track.filter, cols, (*at, "filter"))
    return out
