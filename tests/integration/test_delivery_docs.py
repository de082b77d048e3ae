"""The docs/delivery.md walkthrough runs as written and prints what its prose says."""

from __future__ import annotations

from tests.conftest import ROOT
from tests.integration.test_readme import needs_curl, run_block


@needs_curl
def test_delivery_walkthrough_runs() -> None:
    out = run_block(ROOT / "docs" / "delivery.md", "delivery")
    assert '"accepted":8' in out
    assert "orders 1 delivered 1 to_accept 600.0 to_deliver 2700.0 on time 1.0" in out
    assert "br_2 for the br_1 manager: 404" in out
    assert "every branch for the br_1 manager: 403" in out
    assert "orders per branch [('br_1', 1), ('br_2', 1)]" in out
    assert "stale after 10.0 min: ['d1'] pings 3 km 2.0" in out
    assert "stale after 30.0 min: [] pings 3 km 2.0" in out
    assert "payload {'event_id': 'e2', 'event_type': 'request_accepted'" in out
