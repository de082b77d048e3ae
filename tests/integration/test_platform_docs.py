"""The docs/platform.md walkthrough (the seed's usage on Gristmill) runs as written and
prints what its prose says."""

from __future__ import annotations

from tests.conftest import ROOT
from tests.integration.test_readme import needs_curl, run_block


@needs_curl
def test_platform_walkthrough_runs() -> None:
    out = run_block(ROOT / "docs" / "platform.md", "platform")
    assert '"accepted":3' in out
    assert "total 1 project.created" in out
    assert "total_events 1 unique_users 1" in out
    assert "projects_created_today 1" in out
    assert "sync healthy platform.platform_events" in out
    assert "completed 2 rows anonymized" in out
    assert "retention dry run removes 0" in out
    assert "'erasure.completed'" in out
    assert "('p-1', None, 'client', 0, 'transaction', '{\"country\":\"US\"}', 'mobile'" in out
    assert "ann@example.org" not in out.split("rows anonymized")[1]
