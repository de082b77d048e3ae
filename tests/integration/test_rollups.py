"""Rollups stay exact after late and duplicate events; the planner picks the right path."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlglot import exp

from gristmill.rollup.delta import merged
from gristmill.rollup.spec import full_rebuild, rollup_table
from gristmill.runtime import Runtime
from tests.conftest import PACKS, make_settings
from tests.factories import order
from tests.integration.analytics_fixtures import Loaded, send


def snapshot(lo: Loaded, name: str) -> list[tuple[Any, ...]]:
    """The rollup one row per key (DuckDB keeps a load's aggregates as rows of their own until
    it folds them)."""
    pack = lo.rt.packs["marketplace"]
    rows = lo.rt.warehouse.query(merged(pack, name, lo.rt.warehouse.dialect)).to_pylist()
    out = []
    for r in rows:
        out.append(tuple(sorted(v) if isinstance(v, list) else v for v in r.values()))
    return sorted(out, key=repr)


@pytest.mark.parametrize("name", ["marketplace_hourly", "ads_hourly"])
def test_incremental_rollup_equals_full_rebuild(loaded: Loaded, name: str) -> None:
    pack = loaded.rt.packs["marketplace"]
    incremental = snapshot(loaded, name)
    assert incremental
    for stmt in full_rebuild(pack, name, pack.spec.rollups[name]):
        loaded.rt.warehouse.execute(stmt)
    assert snapshot(loaded, name) == incremental


def test_a_late_event_updates_its_old_bucket(loaded: Loaded) -> None:
    url = (
        "/v1/metrics?metrics=orders,gmv_cents,buyers&start=2026-09-10T00:00:00Z"
        "&end=2026-09-11T00:00:00Z&group_by=vendor_store_id&filter=vendor_store_id:eq:vnd_007"
    )
    before = loaded.get("admin", url + "&debug=true").json()
    assert before["debug"][0]["path"] == "rollup"
    row0 = before["rows"][0] if before["rows"] else {"orders": 0, "gmv_cents": 0, "buyers": 0}
    send(
        loaded.rt,
        [
            order(
                vendor="vnd_007",
                buyer="brand-new-buyer",
                amount=123_45,
                occurred_at="2026-09-10T13:30:00Z",
                event_id="very-late",
            )
        ],
    )
    after = loaded.get("admin", url).json()["rows"][0]
    assert after["orders"] == row0["orders"] + 1
    assert after["gmv_cents"] == row0["gmv_cents"] + 123_45
    assert after["buyers"] == row0["buyers"] + 1
    send(
        loaded.rt,
        [
            order(
                vendor="vnd_007",
                buyer="brand-new-buyer",
                amount=123_45,
                occurred_at="2026-09-10T13:30:00Z",
                event_id="very-late",
            )
        ],
    )
    assert loaded.get("admin", url).json()["rows"][0] == after  # the duplicate changes nothing


@pytest.mark.parametrize(
    ("query", "path"),
    [
        ("metrics=orders&start=2026-10-01T00:00:00Z&end=2026-10-08T00:00:00Z&grain=day", "rollup"),
        ("metrics=orders&preset=30d&grain=day&tz=America/New_York", "rollup+raw"),
        ("metrics=orders&preset=30d&grain=day&tz=Asia/Kolkata", "raw"),
        ("metrics=orders&preset=30d&group_by=store_id", "raw"),
        ("metrics=median_order_cents&preset=30d", "raw"),
        ("metrics=orders&start=2026-10-01T00:10:00Z&end=2026-10-01T00:50:00Z", "raw"),
        ("metrics=ad_clicks,ctr&preset=7d&group_by=placement", "rollup+raw"),
    ],
)
def test_planner_paths(loaded: Loaded, query: str, path: str) -> None:
    body = loaded.get("admin", f"/v1/metrics?{query}&debug=true").json()
    assert [d["path"] for d in body["debug"]] == [path]
    assert "SELECT" in body["debug"][0]["sql"]


def test_a_changed_rollup_definition_is_rebuilt(tmp_path: Path) -> None:
    packs = tmp_path / "packs"
    shutil.copytree(PACKS / "marketplace", packs / "marketplace")
    settings = make_settings(tmp_path / "d", packs_dir=packs)
    rt = Runtime(settings)
    send(rt, [order(occurred_at=f"2026-10-01T0{h}:30:00Z", amount=100) for h in (3, 5, 7)])
    rt.stop()
    f = packs / "marketplace" / "pack.yaml"
    f.write_text(
        f.read_text().replace(
            "    grain: hour\n    dimensions: [vendor_store_id]\n",
            "    grain: day\n    dimensions: [vendor_store_id]\n",
        )
    )
    rt = Runtime(settings)
    send(rt, [order(occurred_at="2026-10-01T09:30:00Z", amount=100)])
    # One day bucket (the load after the rebuild appended its own row to it: reads merge).
    days = exp.Count(this=exp.Distinct(expressions=[exp.column("bucket")]))
    q = exp.select(exp.func("sum", exp.column("orders__n")).as_("n"), days.as_("days")).from_(
        rollup_table(rt.packs["marketplace"], "marketplace_hourly")
    )
    assert rt.warehouse.query(q).to_pylist() == [{"n": 4, "days": 1}]
    rt.stop()
