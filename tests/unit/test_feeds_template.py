"""Feed templates fail at load with the file, the path and the fault; a good one parses."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gristmill.core.errors import ConfigError
from gristmill.feeds.template import load_feeds
from gristmill.pack.loader import load_pack

ROOT = Path(__file__).resolve().parents[2]


def pack_with(tmp_path: Path, old: str, new: str) -> Path:
    dst = tmp_path / "sales_feeds"
    shutil.copytree(ROOT / "packs" / "sales_feeds", dst)
    text = (dst / "feeds.yaml").read_text()
    assert old in text
    (dst / "feeds.yaml").write_text(text.replace(old, new))
    return dst


def test_shipped_templates_load() -> None:
    feeds = load_feeds(load_pack(ROOT / "packs" / "sales_feeds"))
    assert sorted(feeds) == ["costs", "sales"]
    sales = feeds["sales"]
    assert sales.required == ["transaction_date", "product_name", "quantity", "price"]
    assert sales.staging_table == "staging_sales_items"
    assert set(sales.expressions) >= {"gross_revenue_cents", "cogs_amount_cents"}


@pytest.mark.parametrize(
    ("old", "new", "fault"),
    [
        (
            "gross_revenue_cents: quantity * price",
            "gross_revenue_cents: quantity * prize",
            "unknown name 'prize'",
        ),
        (
            "gross_revenue_cents: quantity * price",
            "gross_revenue_cents: (SELECT 1 FROM secrets)",
            "only arithmetic",
        ),
        (
            "gross_revenue_cents: quantity * price",
            "gross_revenue_cents: quantity *",
            "into.columns.gross_revenue_cents",
        ),
        ("      table: fact_sales", "      table: fact_sale", "unknown table 'fact_sale'"),
        ("occurred_at: transaction_date", "occurred_at: product_name", "is no date column"),
        (
            "lookup: {column: product_name, entity: products, threshold: 70}\n    into",
            "lookup: {column: product, entity: products, threshold: 70}\n    into",
            "lookup.column: unknown column 'product'",
        ),
        (
            "    roles: [owner]\n    columns:\n      transaction_date",
            "    roles: [cashier]\n    columns:\n      transaction_date",
            "unknown role 'cashier'",
        ),
        (
            "{type: integer, required: true, min: 1",
            "{type: decimal, required: true, min: 1",
            "feeds.yaml",
        ),
    ],
)
def test_bad_templates_fail_at_load(tmp_path: Path, old: str, new: str, fault: str) -> None:
    pack = load_pack(pack_with(tmp_path, old, new))
    with pytest.raises(ConfigError, match=fault.replace("(", r"\(").replace("*", r"\*")):
        load_feeds(pack)
