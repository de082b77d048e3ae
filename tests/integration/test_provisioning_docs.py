"""The docs/provisioning.md walkthrough runs as written and prints what the prose says."""

from __future__ import annotations

from tests.conftest import ROOT
from tests.integration.test_readme import run_block


def test_provisioning_walkthrough_runs() -> None:
    out = run_block(ROOT / "docs" / "provisioning.md", "provisioning")
    assert "Provisioning plan for duckdb (sales_feeds; catalogue live):" in out
    assert "-- applied to duckdb: " in out
    assert "No changes: the warehouse matches the packs." in out
    assert "byte-identical plans" in out
    assert "[('add_column', 'sales_feeds.fact_sales.coupon_code', 'additive')]" in out
    assert 'ALTER TABLE "sales_feeds"."fact_sales" ADD COLUMN "coupon_code" TEXT' in out
    assert "-- applied to duckdb: nothing to do" in out
    assert "refused: 1 blocking change(s) — sales_feeds.fact_sales.gross_margin_percent" in out
    assert "Nothing dropped: pass --yes" in out
    assert "Dropped 2 tables of sales_feeds" in out


def test_provisioning_redshift_block_runs() -> None:
    out = run_block(ROOT / "docs" / "provisioning.md", "provisioning-redshift")
    assert (
        'DISTKEY("business_id") COMPOUND SORTKEY("occurred_at", "business_id", "product_id");'
        in (out)
    )
    assert 'kinesis COPY "sales_feeds"."fact_sales" ("' in out
