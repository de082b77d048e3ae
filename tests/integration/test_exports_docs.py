"""The docs/exports.md walkthrough runs as written against ``gristmill serve`` (the server's
own export worker runs the job) and prints what the prose says."""

from __future__ import annotations

from tests.conftest import ROOT
from tests.integration.test_readme import needs_curl, run_block


@needs_curl
def test_exports_walkthrough_runs() -> None:
    out = run_block(ROOT / "docs" / "exports.md", "exports")
    lines = out.splitlines()
    assert "event_id,event_type,occurred_at,vendor_store_id,amount_cents" in lines
    assert sum(1 for ln in lines if ln.startswith(("e1,", "e2,", "e3,"))) == 2
    assert "succeeded {'gmv_cents': 2050, 'orders': 2, 'revenue_cents': 0} True" in out
    assert "day,vendor_store_id,orders,gmv_cents,revenue_cents" in out
    assert "tampered: 403" in out
    assert "same job: True" in out
    assert "foreign scope: 404" in out
    assert "reconciled" in out
