"""The docs/usage.md walkthrough runs as written and prints what its prose says."""

from __future__ import annotations

from tests.conftest import ROOT
from tests.integration.test_readme import needs_curl, run_block


@needs_curl
def test_usage_walkthrough_runs() -> None:
    out = run_block(ROOT / "docs" / "usage.md", "usage")
    assert out.count('"accepted":4') == 2
    assert "requests 3 spend_micros 7595 unpriced 1 stale False" in out
    assert "org_b for org_a: 404" in out
    assert "usage for an engineer: 403" in out
    assert "method exact" in out
    assert "('gpt-4o-mini', 1.0, 420.0)" in out
    assert "reprice would change 0 of 4" in out
    assert "('views.read', 'engineer', 200)" in out
    assert "('views.read', 'engineer', 403)" in out
    assert "('views.read', 'org_admin', 404)" in out
