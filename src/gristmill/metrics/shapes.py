"""SQL per query shape for the entity views (lifecycle, track), built and rendered once.

Building and rendering a sqlglot tree costs more than the query itself on a branch's week
(measured: ~200 ms of tree copying against ~60 ms in DuckDB), so the planner's rule applies
here too: the rendered text is cached per shape (spec, dialect, grain, group-by, which
conditions on which columns with how many values) and only the bound values change. The
values are listed by a mirror of the builder's bind order; the first build of each shape
checks the mirror against what the builder bound, so the two cannot drift silently.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

from gristmill.metrics.model import Condition

MAX_SHAPES = 512


def cond_values(conds: Sequence[Condition]) -> list[Any]:
    """Bound values of ``conds`` in the order ``compile.condition`` binds them."""
    out: list[Any] = []
    for c in conds:
        if c.op == "is_null":
            continue
        if c.op in ("in", "not_in"):
            out += list(c.value) if isinstance(c.value, tuple) else [c.value]
        else:
            out.append(c.value)
    return out


def cond_shape(conds: Sequence[Condition]) -> tuple[Hashable, ...]:
    return tuple(
        (c.column, c.op, len(c.value) if isinstance(c.value, tuple) else None) for c in conds
    )


class ShapeCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sql: OrderedDict[Hashable, tuple[object, str, list[str]]] = OrderedDict()

    def get(
        self,
        owner: object,
        key: Hashable,
        values: list[Any],
        build: Callable[[], tuple[str, dict[str, Any]]],
    ) -> tuple[str, dict[str, Any]]:
        """``(sql, params)`` of the shape ``key`` of ``owner`` (a spec object: kept in the
        entry, so a reloaded pack's new spec never reuses an old entry)."""
        full = (id(owner), key)
        with self._lock:
            hit = self._sql.get(full)
            if hit is not None and hit[0] is owner:
                self._sql.move_to_end(full)
                return hit[1], dict(zip(hit[2], values, strict=True))
        sql, params = build()
        if list(params.values()) != values:
            raise AssertionError(f"bind order drifted for shape {key!r}")
        with self._lock:
            self._sql[full] = (owner, sql, list(params))
            while len(self._sql) > MAX_SHAPES:
                self._sql.popitem(last=False)
        return sql, params
