"""The rollups benchmark, run small: it must run at all (its hooks wrap warehouse methods, so a
changed signature breaks it silently until the next ``make bench``), and its two modes must
leave identical rollups — the exactness the speedup figures rest on."""

from __future__ import annotations

import pytest
from bench import rollups


@pytest.mark.parametrize(
    "engine", ["duckdb", pytest.param("clickhouse", marks=pytest.mark.clickhouse)]
)
def test_delta_and_recompute_leave_the_same_rollups(engine: str) -> None:
    out = rollups.run(base=3_000, late=600, engines=(engine,))
    shapes = out["engines"][engine]["shapes"]
    assert set(shapes) == {"in_order_1h", "late_3d"}
    for shape, row in shapes.items():
        assert row["rollups_equal"], shape
        for mode in ("recompute", "delta"):
            assert row[mode]["rollups_s"] > 0, (shape, mode)  # the hooks saw the rollup steps
