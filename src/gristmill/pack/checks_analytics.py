"""Cross-checks of metrics, rollups, views and role scopes against the tables they name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gristmill.core.permissions import Permission
from gristmill.pack.analytics import FILTER_OPS, ViewSpec
from gristmill.pack.checks import PackIssue
from gristmill.pack.models import ENVELOPE_TYPES, ColumnType, Pack
from gristmill.pack.observe import check_observe

NUMERIC = frozenset({ColumnType.INT64, ColumnType.FLOAT64})
ROLLUP_TYPES = frozenset({"count", "sum", "avg", "min", "max", "count_distinct"})
RESERVED_ROUTES = (
    "/v1/",
    "/ui",
    "/docs",
    "/openapi",
    "/healthz",
    "/readyz",
    "/metrics",
    "/redoc",
    "/static",
)


def column_types(pack: Pack, table: str) -> dict[str, ColumnType]:
    return {c.name: c.type for c in pack.columns(table)}


def check_filter(
    filt: dict[str, Any], cols: dict[str, ColumnType], path: tuple[str, ...]
) -> list[tuple[tuple[str, ...], str]]:
    out: list[tuple[tuple[str, ...], str]] = []
    for col, cond in filt.items():
        if col not in cols:
            out.append(((*path, col), f"{col!r} is not a column of the metric's table"))
            continue
        if isinstance(cond, dict):
            for op, value in cond.items():
                if op not in FILTER_OPS:
                    out.append(
                        (
                            (*path, col, str(op)),
                            f"unknown operator {op!r} (use {', '.join(sorted(FILTER_OPS))})",
                        )
                    )
                elif op in ("in", "not_in") and not isinstance(value, list):
                    out.append(((*path, col, op), "needs a list"))
                elif op not in ("in", "not_in") and isinstance(value, list | dict):
                    out.append(((*path, col, op), "needs a single value"))
        elif isinstance(cond, list):
            if not all(isinstance(v, str | int | float | bool) for v in cond):
                out.append(((*path, col), "a list filter takes scalar values"))
        elif not isinstance(cond, str | int | float | bool):
            out.append(((*path, col), "a filter value must be a scalar, a list or {op: value}"))
    return out


def check_analytics(pack: Pack, file: Path) -> list[PackIssue]:
    spec = pack.spec
    issues: list[PackIssue] = []

    def add(path: tuple[str, ...], msg: str) -> None:
        issues.append(PackIssue(file, path, msg))

    for t_name, table in spec.tables.items():
        cols = column_types(pack, t_name)
        for i, d in enumerate(table.dimensions):
            if d not in cols:
                add(("tables", t_name, "dimensions", str(i)), f"{d!r} is not a column")
            elif cols[d] is ColumnType.JSON:
                add(("tables", t_name, "dimensions", str(i)), "a JSON column cannot be a dimension")

    for m_name, m in spec.metrics.items():
        base = ("metrics", m_name)
        if m.type == "ratio":
            for part in ("numerator", "denominator"):
                ref = getattr(m, part)
                if ref not in spec.metrics:
                    add((*base, part), f"unknown metric {ref!r}")
                elif spec.metrics[ref].type == "ratio":
                    add((*base, part), "a ratio's parts must not be ratios")
            continue
        assert m.table is not None
        if m.table not in spec.tables:
            add((*base, "table"), f"unknown table {m.table!r}")
            continue
        cols = column_types(pack, m.table)
        if m.column is not None:
            ctype = cols.get(m.column)
            if ctype is None:
                add((*base, "column"), f"{m.column!r} is not a column of {m.table!r}")
            elif m.type in ("sum", "avg", "percentile") and ctype not in NUMERIC:
                add(
                    (*base, "column"), f"a {m.type} needs a numeric column; {m.column!r} is {ctype}"
                )
            elif ctype is ColumnType.JSON:
                add((*base, "column"), "a JSON column cannot be aggregated")
        for path, msg in check_filter(m.filter, cols, (*base, "filter")):
            add(path, msg)

    for r_name, r in spec.rollups.items():
        base = ("rollups", r_name)
        if r.table not in spec.tables:
            add((*base, "table"), f"unknown table {r.table!r}")
            continue
        dims = spec.tables[r.table].dimensions
        for i, d in enumerate(r.dimensions):
            if d not in dims:
                add(
                    (*base, "dimensions", str(i)),
                    f"{d!r} is not a dimension of {r.table!r} (dimensions: {', '.join(dims)})",
                )
        for i, ref in enumerate(r.metrics):
            rm = spec.metrics.get(ref)
            if rm is None:
                add((*base, "metrics", str(i)), f"unknown metric {ref!r}")
            elif rm.type not in ROLLUP_TYPES:
                add(
                    (*base, "metrics", str(i)),
                    f"a {rm.type} metric cannot be rolled up exactly; it is answered from rows",
                )
            elif rm.table != r.table:
                add((*base, "metrics", str(i)), f"{ref!r} is over {rm.table!r}, not {r.table!r}")

    known_perms = {p.value for p in Permission}
    unscoped_only = {
        Permission.QUARANTINE_READ.value,
        Permission.QUARANTINE_REPLAY.value,
        Permission.PIPELINE_READ.value,
    }
    for r_name, role in spec.roles.items():
        for i, perm in enumerate(role.permissions):
            where = ("roles", r_name, "permissions", str(i))
            if perm not in known_perms:
                add(where, f"unknown permission {perm!r} (known: {', '.join(sorted(known_perms))})")
            elif perm == Permission.INGEST.value:
                add(where, "ingest belongs to write keys, not to pack roles")
            elif perm in unscoped_only and role.scope:
                add(
                    where,
                    f"{perm!r} shows raw events of every tenant; a scoped role cannot hold it",
                )
        issues += _check_scope(pack, file, ("roles", r_name, "scope"), role.scope, role.claims)

    maps = spec.mappings
    if not isinstance(maps.unmapped, str) and maps.unmapped.event_type not in spec.event_types:
        add(
            ("mappings", "unmapped", "event_type"),
            f"unknown event type {maps.unmapped.event_type!r}",
        )
    for dialect in ("segment", "posthog", "snowplow", "cloudevents"):
        for name, em in maps.for_dialect(dialect).items():
            if em.event_type not in spec.event_types:
                add(
                    ("mappings", dialect, name, "event_type"),
                    f"unknown event type {em.event_type!r}",
                )
            elif em.schema_version is not None and (
                em.schema_version not in spec.event_types[em.event_type].versions
            ):
                add(
                    ("mappings", dialect, name, "schema_version"),
                    f"{em.event_type!r} has no version {em.schema_version}",
                )

    routes: dict[str, str] = {}
    for v_name, view in spec.views.items():
        base = ("views", v_name)
        own = view.route.startswith(f"/v1/{pack.name}/")  # a pack's own namespace
        if view.route.startswith(RESERVED_ROUTES) and not own:
            add((*base, "route"), f"{view.route!r} collides with Gristmill's own routes")
        if view.route in routes:
            add(
                (*base, "route"), f"{view.route!r} is also the route of view {routes[view.route]!r}"
            )
        routes[view.route] = v_name
        for i, role_name in enumerate(view.roles):
            if role_name not in spec.roles:
                add((*base, "roles", str(i)), f"unknown role {role_name!r}")
            else:
                missing = set(view.scope.values()) - set(spec.roles[role_name].claims)
                if missing:
                    add((*base, "scope"), f"role {role_name!r} carries no claim {sorted(missing)}")
        for ref in view.metric_names():
            if ref not in spec.metrics:
                add(base, f"unknown metric {ref!r}")
        if view.aggregate is not None:
            for dim in view.aggregate.filters:
                if not any(dim in t.dimensions for t in spec.tables.values()):
                    add((*base, "aggregate", "filters"), f"{dim!r} is no table's dimension")
        issues += _check_scope(pack, file, (*base, "scope"), view.scope, None)
        issues += _check_view_dims(pack, file, base, view)
    issues += [PackIssue(file, path, msg) for path, msg in check_observe(pack)]
    return issues


def _check_view_dims(
    pack: Pack, file: Path, base: tuple[str, ...], view: ViewSpec
) -> list[PackIssue]:
    """Path columns, breakdown and reliability dimensions are dimensions of every table the
    view's metrics read (the allowlist a caller's values are checked against)."""
    spec = pack.spec
    tables = {t for m in view.metric_names() if m in spec.metrics and (t := spec.metrics[m].table)}
    dims = [set(spec.tables[t].dimensions) for t in tables if t in spec.tables]
    shared = set.intersection(*dims) if dims else set()
    out: list[PackIssue] = []

    def need(path: tuple[str, ...], cols: list[str]) -> None:
        for c in cols:
            if c not in shared:
                out.append(PackIssue(file, path, f"{c!r} is not a dimension of {sorted(tables)}"))

    if view.lifecycle is None and view.track is None:
        need((*base, "path"), list(view.path.values()))
    if view.breakdown is not None:
        need((*base, "breakdown", "by"), view.breakdown.by)
        need((*base, "breakdown", "filters"), view.breakdown.filters)
    r = view.reliability
    if r is not None:
        need((*base, "reliability", "by"), r.by)
        need((*base, "reliability", "filters"), r.filters)
        if r.latency_bins not in spec.enrichment.log_bins:
            out.append(
                PackIssue(
                    file,
                    (*base, "reliability", "latency_bins"),
                    f"{r.latency_bins!r} is not an enrichment.log_bins column",
                )
            )
        for key in ("requests", "errors"):
            m = spec.metrics.get(getattr(r, key))
            if m is not None and m.type != "count":
                out.append(PackIssue(file, (*base, "reliability", key), "must name a count metric"))
    return out


def _check_scope(
    pack: Pack, file: Path, path: tuple[str, ...], scope: dict[str, str], claims: list[str] | None
) -> list[PackIssue]:
    out = []
    all_cols = {c for t in pack.spec.tables for c in column_types(pack, t)}
    for col, claim in scope.items():
        if col not in all_cols or (col in ENVELOPE_TYPES and col not in ("user_id", "source")):
            out.append(PackIssue(file, (*path, col), f"{col!r} is not a column of any table"))
        if claims is not None and claim not in claims:
            out.append(
                PackIssue(file, (*path, col), f"claim {claim!r} is not in the role's claims")
            )
    return out
