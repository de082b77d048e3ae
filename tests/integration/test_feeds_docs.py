"""The docs/feeds.md walkthrough runs as written and prints what the prose says."""

from __future__ import annotations

from tests.conftest import ROOT
from tests.integration.test_readme import needs_curl, run_block


@needs_curl
def test_feeds_walkthrough_runs() -> None:
    out = run_block(ROOT / "docs" / "feeds.md", "feeds")
    assert "'valid_rows': 2, 'invalid_rows': 1, 'new_product_candidates': ['cold brew']" in out
    assert "4 False [\"transaction_date: not a calendar date: '31.02.2025'\"]" in out
    assert '"type":"https://gristmill.dev/problems/invalid-rows"' in out
    assert '"status":"transformed"' in out
    assert '"gross_revenue":11.25' in out
    assert '"gross_margin_percent":78.67' in out
    assert '"code":"missing_product_cost"' in out
    assert '"reasons":["transaction_date: not a calendar date: \'31.02.2025\'"]' in out
    assert '"total_sales":11.25,"cogs":2.4,"gross_margin":8.85' in out
    assert "transformed · rows in 3 = accepted 2 + rejected 1" in out
    assert '"rows":2' in out  # the extent: both sales are today's


@needs_curl
def test_feeds_honest_walkthrough_runs() -> None:
    out = run_block(ROOT / "docs" / "feeds.md", "feeds-honest")
    assert "read both ways" in out
    assert "exit 1" in out
    assert "2 1 ['Latte', 'Lattee'] 10.5" in out
    assert "merged ['Lattes'] created {}" in out
