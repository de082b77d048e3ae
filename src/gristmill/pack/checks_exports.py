"""Cross-checks of a pack's ``exports:`` against its tables, metrics and roles."""

from __future__ import annotations

from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gristmill.core.permissions import Permission
from gristmill.pack.checks import PackIssue
from gristmill.pack.exports import MetricsExportSpec, RowsExportSpec
from gristmill.pack.models import ColumnType, Pack

EXACT_METRICS = frozenset({"count", "sum"})
"""Metric types a metrics export may hold: integers that add up exactly across buckets."""


def export_tables(pack: Pack, spec: RowsExportSpec | MetricsExportSpec) -> list[str]:
    """The tables an export reads (one for rows; those of its metrics otherwise)."""
    if isinstance(spec, RowsExportSpec):
        return [spec.table]
    out: list[str] = []
    for name in spec.metrics.values():
        m = pack.spec.metrics.get(name)
        if m is not None and m.table is not None and m.table not in out:
            out.append(m.table)
    return out


def check_exports(pack: Pack, file: Path) -> list[PackIssue]:
    spec = pack.spec
    issues: list[PackIssue] = []

    def add(path: tuple[str, ...], msg: str) -> None:
        issues.append(PackIssue(file, ("exports", *path), msg))

    for name, ex in spec.exports.items():
        if isinstance(ex, RowsExportSpec):
            if ex.table not in spec.tables:
                add((name, "table"), f"unknown table {ex.table!r}")
                continue
            cols = {c.name: c.type for c in pack.columns(ex.table)}
            for i, col in enumerate(ex.columns):
                if col not in cols:
                    add((name, "columns", str(i)), f"{col!r} is not a column of {ex.table!r}")
            dims = spec.tables[ex.table].dimensions
            for i, f in enumerate(ex.filters):
                if f not in dims:
                    add(
                        (name, "filters", str(i)),
                        f"{f!r} is not a dimension of {ex.table!r} (dimensions: "
                        f"{', '.join(dims) or 'none'})",
                    )
        else:
            for csv_col, metric in ex.metrics.items():
                m = spec.metrics.get(metric)
                if m is None:
                    add((name, "metrics", csv_col), f"unknown metric {metric!r}")
                elif m.type not in EXACT_METRICS:
                    add(
                        (name, "metrics", csv_col),
                        f"a {m.type} metric is not exact and additive; exports hold count and "
                        "sum metrics (their totals reconcile to the metric layer's exactly)",
                    )
                elif m.type == "sum" and m.table is not None and m.column is not None:
                    ctype = {c.name: c.type for c in pack.columns(m.table)}.get(m.column)
                    if ctype is not ColumnType.INT64:
                        add(
                            (name, "metrics", csv_col),
                            f"{metric!r} sums a {ctype} column; exports hold integer sums only",
                        )
            if issues:
                continue
            tables = export_tables(pack, ex)
            shared = [
                d
                for d in spec.tables[tables[0]].dimensions
                if all(d in spec.tables[t].dimensions for t in tables[1:])
            ]
            for i, d in enumerate(ex.group_by):
                if d not in shared:
                    add(
                        (name, "group_by", str(i)),
                        f"{d!r} is not a dimension of every table the metrics read "
                        f"(shared: {', '.join(shared) or 'none'})",
                    )
            try:
                ZoneInfo(ex.tz)
            except (ZoneInfoNotFoundError, ValueError):
                add((name, "tz"), f"{ex.tz!r} is not an IANA time zone")
        tables = export_tables(pack, ex)
        for i, role_name in enumerate(ex.roles):
            role = spec.roles.get(role_name)
            if role is None:
                add((name, "roles", str(i)), f"unknown role {role_name!r}")
                continue
            if Permission.EXPORTS_CREATE.value not in role.permissions:
                add(
                    (name, "roles", str(i)),
                    f"role {role_name!r} lacks permission 'exports:create'",
                )
            missing = set(ex.scope.values()) - set(role.claims)
            if missing:
                add((name, "scope"), f"role {role_name!r} carries no claim {sorted(missing)}")
            for col in [*role.scope, *ex.scope]:
                for t in tables:
                    if col not in {c.name for c in pack.columns(t)}:
                        add(
                            (name, "roles", str(i)),
                            f"role {role_name!r} is scoped by {col!r}, which {t!r} lacks: "
                            "its rows could not be limited",
                        )
        if ex.prefix_by is not None and not all(
            ex.prefix_by in spec.tables[t].dimensions for t in tables
        ):
            add((name, "prefix_by"), f"{ex.prefix_by!r} is not a dimension of {tables}")
        for param, col in ex.path.items():
            if isinstance(ex, RowsExportSpec) and col not in ex.filters:
                add((name, "path", param), f"{col!r} must also be one of the export's filters")
            if not all(col in spec.tables[t].dimensions for t in tables if t in spec.tables):
                add((name, "path", param), f"{col!r} is not a dimension of {tables}")
        if ex.route is not None:
            taken = {v.route for v in spec.views.values()}
            taken |= {e.route for n, e in spec.exports.items() if n != name and e.route}
            if ex.route in taken or ex.route.startswith(("/v1/", "/ui", "/dashboard")):
                add((name, "route"), f"{ex.route!r} collides with another route")
    return issues
