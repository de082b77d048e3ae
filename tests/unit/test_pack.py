"""Pack loading: the marketplace pack loads; a bad pack names file, line, path and fault."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from gristmill.core.errors import ConfigError
from gristmill.pack import load_pack
from gristmill.pack.models import ColumnType
from tests.conftest import PACKS


def test_marketplace_pack_loads() -> None:
    pack = load_pack(PACKS / "marketplace")
    # segment_calls and segment.*: the engine default for a pack that maps Segment events
    assert set(pack.spec.tables) == {"marketplace_events", "ad_events", "segment_calls"}
    assert set(pack.spec.event_types) == {
        "order_created",
        "order_paid",
        "cash_collected",
        "payout_completed",
        "ad_impression",
        "ad_click",
        *(f"segment.{c}" for c in ("identify", "page", "screen", "group", "alias")),
    }
    for name in ("marketplace_events", "ad_events"):
        table = pack.spec.tables[name]
        assert table.partition_by.granularity == "day"
        assert table.cluster_by == ["vendor_store_id", "store_id", "event_type"]
    assert pack.spec.tables["segment_calls"].cluster_by == ["user_id", "event_type"]
    cols = {c.name: c.type for c in pack.columns("marketplace_events")}
    assert cols["amount_cents"] is ColumnType.INT64
    assert cols["occurred_at"] is ColumnType.TIMESTAMP
    assert pack.latest_version("order_created") == 2
    assert pack.spec.dedupe.window.days == 7


@pytest.fixture
def pack_copy(tmp_path: Path) -> Path:
    dst = tmp_path / "marketplace"
    shutil.copytree(PACKS / "marketplace", dst)
    return dst


def _edit(root: Path, old: str, new: str) -> None:
    f = root / "pack.yaml"
    text = f.read_text()
    assert old in text, old
    f.write_text(text.replace(old, new, 1))


def _line_of(root: Path, needle: str) -> int:
    for i, line in enumerate((root / "pack.yaml").read_text().splitlines(), 1):
        if re.search(re.escape(needle) + r"(\s|$)", line):
            return i
    raise AssertionError(needle)


@pytest.mark.parametrize(
    ("old", "new", "needle", "path", "fault"),
    [
        (
            "on account).\n    category: transaction\n    table: marketplace_events",
            "on account).\n    category: transaction\n    table: marketplace_event",
            "table: marketplace_event",
            "event_types.order_paid.table",
            "unknown table 'marketplace_event'",
        ),
        (
            "  ad_click:\n    category: advertising",
            "  ad_click:\n    category: adverts",
            "category: adverts",
            "event_types.ad_click.category",
            "unknown category 'adverts'",
        ),
        (
            "    cluster_by: [vendor_store_id, store_id, event_type]\n    dimensions",
            "    cluster_by: [vendor_id, store_id, event_type]\n    dimensions",
            "cluster_by: [vendor_id, store_id, event_type]",
            "tables.marketplace_events.cluster_by.0",
            "'vendor_id' is not a column",
        ),
        (
            "    dimensions: [vendor_store_id, store_id, event_type]\n  ad_events",
            "    dimensions: [vendor_id, store_id, event_type]\n  ad_events",
            "dimensions: [vendor_id, store_id, event_type]",
            "tables.marketplace_events.dimensions.0",
            "'vendor_id' is not a column",
        ),
        (
            "  window: 7d",
            "  window: 7 days",
            "window: 7 days",
            "dedupe.window",
            "is not a duration",
        ),
        (
            "    dimensions: [vendor_store_id, store_id, event_type]\n  ad_events",
            "    dimensions: [vendor_store_id, store_id, event_type]\n"
            "    clustering: [x]\n  ad_events",
            "clustering: [x]",
            "tables.marketplace_events.clustering",
            "Extra inputs are not permitted",
        ),
        (
            "      placement: {type: string}",
            "      placement: {type: int64}",
            "promote: [ad_id, campaign_id, vendor_store_id, store_id, placement, cost_cents]",
            "event_types.ad_impression.promote.4",
            "cannot fill a int64 column",
        ),
    ],
)
def test_bad_pack_names_file_line_path_and_fault(
    pack_copy: Path, old: str, new: str, needle: str, path: str, fault: str
) -> None:
    _edit(pack_copy, old, new)
    with pytest.raises(ConfigError) as exc:
        load_pack(pack_copy)
    msg = str(exc.value)
    line = _line_of(pack_copy, needle)
    assert f"{pack_copy / 'pack.yaml'}:{line} {path}: " in msg, msg
    assert fault in msg


def test_missing_schema_file(pack_copy: Path) -> None:
    (pack_copy / "schemas" / "order_paid" / "1.json").unlink()
    with pytest.raises(ConfigError, match=r"order_paid/1\.json does not exist"):
        load_pack(pack_copy)


def test_invalid_json_schema_names_schema_file(pack_copy: Path) -> None:
    f = pack_copy / "schemas" / "ad_click" / "1.json"
    doc = json.loads(f.read_text())
    doc["properties"]["cost_cents"]["type"] = "integr"
    f.write_text(json.dumps(doc))
    with pytest.raises(ConfigError) as exc:
        load_pack(pack_copy)
    assert str(f) in str(exc.value)
    assert "not a valid JSON Schema" in str(exc.value)


def test_promoted_property_missing_from_schema(pack_copy: Path) -> None:
    f = pack_copy / "schemas" / "order_paid" / "1.json"
    doc = json.loads(f.read_text())
    del doc["properties"]["store_id"]
    f.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"'store_id' is not a property in .*order_paid/1\.json"):
        load_pack(pack_copy)


def test_pack_name_must_match_folder(tmp_path: Path) -> None:
    dst = tmp_path / "other"
    shutil.copytree(PACKS / "marketplace", dst)
    with pytest.raises(ConfigError, match="must equal its folder name"):
        load_pack(dst)


def test_not_yaml(pack_copy: Path) -> None:
    (pack_copy / "pack.yaml").write_text("pack: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_pack(pack_copy)


def test_nested_engine_settings_without_a_type(monkeypatch: pytest.MonkeyPatch) -> None:
    from gristmill.config import Settings

    monkeypatch.setenv("GRISTMILL_LOG__MAX_BYTES", "4096")
    monkeypatch.setenv("GRISTMILL_WAREHOUSE__THREADS", "1")
    s = Settings()
    assert (s.log.type, s.log.max_bytes, s.warehouse.type, s.warehouse.threads) == (
        "sqlite",
        4096,
        "duckdb",
        1,
    )
