"""The query model: what a caller asked for, checked against the pack's allowlists.

Every identifier a request carries (metric, dimension, filter column, operator) is looked up
here; an unknown one is a 400 naming the allowed values. Nothing from a request reaches SQL
except as a bound value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gristmill.core.errors import Problem
from gristmill.metrics.timerange import GRAINS, TimeRange
from gristmill.pack.analytics import FILTER_OPS, MetricSpec
from gristmill.pack.models import ColumnType, Pack

MAX_FILTER_VALUES = 100


@dataclass(frozen=True, slots=True)
class Condition:
    column: str
    op: str
    value: Any
    """A scalar, or a tuple for ``in`` / ``not_in``; None for ``is_null``."""


@dataclass(frozen=True)
class MetricQuery:
    pack: Pack
    metrics: tuple[str, ...]
    range: TimeRange
    grain: str | None = None
    group_by: tuple[str, ...] = ()
    filters: tuple[Condition, ...] = ()
    scope: tuple[Condition, ...] = ()
    """Row limits from the caller's role and view; never from request parameters."""
    debug: bool = False

    def metric(self, name: str) -> MetricSpec:
        return self.pack.spec.metrics[name]

    def base_metrics(self) -> list[str]:
        """Requested metrics with ratios replaced by their parts, in a stable order."""
        out: list[str] = []
        for name in self.metrics:
            m = self.metric(name)
            parts = [m.numerator, m.denominator] if m.type == "ratio" else [name]
            for p in parts:
                assert p is not None
                if p not in out:
                    out.append(p)
        return out

    def tables(self) -> dict[str, list[str]]:
        """Base metrics grouped by table."""
        out: dict[str, list[str]] = {}
        for name in self.base_metrics():
            table = self.metric(name).table
            assert table is not None
            out.setdefault(table, []).append(name)
        return out


def _bad(slug: str, detail: str) -> Problem:
    return Problem(400, slug, "Invalid query", detail)


def check_metrics(pack: Pack, names: Sequence[str]) -> tuple[str, ...]:
    known = pack.spec.metrics
    if not names:
        raise _bad("invalid-metric", f"name at least one metric: {', '.join(known)}")
    for n in names:
        if n not in known:
            raise _bad("invalid-metric", f"unknown metric {n[:64]!r}; known: {', '.join(known)}")
    return tuple(dict.fromkeys(names))


def dimensions(pack: Pack, tables: Sequence[str]) -> list[str]:
    """Dimensions every one of ``tables`` allows (a group-by must exist in each)."""
    sets = [pack.spec.tables[t].dimensions for t in tables]
    return [d for d in sets[0] if all(d in s for s in sets[1:])] if sets else []


def check_grain(grain: str | None) -> str | None:
    """A grain, or ``week@N`` (weeks starting N days after Monday, 1 <= N <= 6)."""
    if grain is not None and grain.startswith("week@") and grain[5:] in tuple("123456"):
        return grain
    if grain is not None and grain not in GRAINS:
        raise _bad("invalid-grain", f"grain must be one of {', '.join(GRAINS)}")
    return grain


def check_dims(pack: Pack, tables: Sequence[str], dims: Sequence[str], what: str) -> None:
    allowed = dimensions(pack, tables)
    for d in dims:
        if d not in allowed:
            raise _bad(
                f"invalid-{what}",
                f"{d[:64]!r} is not an allowed {what} dimension here; "
                f"allowed: {', '.join(allowed) or 'none'}",
            )


def parse_filter(text: str) -> tuple[str, str, str]:
    """``column:op:value`` (``op`` in eq, ne, in, not_in, gt, gte, lt, lte, is_null)."""
    parts = text.split(":", 2)
    if len(parts) == 2 and parts[1] == "is_null":
        return parts[0], "is_null", ""
    if len(parts) != 3:
        raise _bad("invalid-filter", "a filter is column:op:value, e.g. placement:in:search,home")
    return parts[0], parts[1], parts[2]


def typed(value: str, ctype: ColumnType, column: str) -> Any:
    try:
        if ctype is ColumnType.INT64:
            return int(value)
        if ctype is ColumnType.FLOAT64:
            return float(value)
        if ctype is ColumnType.BOOL:
            if value not in ("true", "false"):
                raise ValueError(value)
            return value == "true"
    except ValueError:
        raise _bad("invalid-filter", f"{value[:64]!r} is not a {ctype} for {column}") from None
    return value


def build_conditions(
    pack: Pack, tables: Sequence[str], raw: Sequence[str]
) -> tuple[Condition, ...]:
    out = []
    types = {c.name: c.type for t in tables for c in pack.columns(t)}
    for text in raw:
        column, op, value = parse_filter(text)
        check_dims(pack, tables, [column], "filter")
        if op not in FILTER_OPS:
            raise _bad(
                "invalid-filter",
                f"unknown operator {op[:16]!r}; use {', '.join(sorted(FILTER_OPS))}",
            )
        ctype = types[column]
        v: Any
        if op in ("in", "not_in"):
            items = value.split(",")
            if len(items) > MAX_FILTER_VALUES:
                raise _bad("invalid-filter", f"at most {MAX_FILTER_VALUES} values")
            v = tuple(typed(i, ctype, column) for i in items)
        elif op == "is_null":
            v = None
        else:
            v = typed(value, ctype, column)
        out.append(Condition(column, op, v))
    return tuple(out)


def pack_filter(filt: Mapping[str, Any]) -> tuple[Condition, ...]:
    """A pack's declarative filter (``{col: v}``, ``{col: [a, b]}``, ``{col: {op: v}}``)."""
    out = []
    for col, cond in filt.items():
        if isinstance(cond, dict):
            for op, v in cond.items():
                out.append(Condition(col, op, tuple(v) if isinstance(v, list) else v))
        elif isinstance(cond, list):
            out.append(Condition(col, "in", tuple(cond)))
        else:
            out.append(Condition(col, "eq", cond))
    return tuple(out)
