"""The docs/analytics.md dashboard walkthrough runs as written and prints what its prose
says: AOV 562.5 cents shown as $5.63 (half-up), no quarantine for a vendor, a replay."""

from __future__ import annotations

from tests.conftest import ROOT
from tests.integration.test_readme import needs_curl, run_block


@needs_curl
def test_dashboard_walkthrough_runs() -> None:
    out = run_block(ROOT / "docs" / "analytics.md", "dashboard")
    assert '"accepted":2,"rejected":1' in out
    assert "AOV $5.63" in out
    assert "quarantine panel: False" in out
    assert "vendor lists quarantine: 403" in out
    assert '"replayed":1' in out
