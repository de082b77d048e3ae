"""docs/scale-out.md's walkthrough runs as written: two collectors and two loaders over NATS
into PostgreSQL, conservation balanced at the end."""

from __future__ import annotations

import shutil

import pytest

from tests.conftest import ROOT
from tests.integration.test_readme import run_block

pytestmark = [
    pytest.mark.nats,
    pytest.mark.postgres,
    pytest.mark.skipif(not shutil.which("psql"), reason="psql is not installed"),
    pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed"),
]


def test_scale_out_walkthrough_runs() -> None:
    out = run_block(ROOT / "docs" / "scale-out.md", "scale-out")
    assert '"role":"collect"' in out
    assert '"log":"nats"' in out
    assert out.count('"accepted":1') == 4
    assert "loaded 4" in out
    assert (
        "{'received': 4, 'loaded': 4, 'quarantined': 0, 'duplicates': 0, "
        "'in_flight': 0, 'suppressed': 0}" in out
    )
