"""docs/scale-out.md's walkthrough runs as written: two collectors and two loaders over NATS
into PostgreSQL, conservation balanced at the end."""

from __future__ import annotations

import socket

import pytest

from gristmill.demo.process import free_port
from tests.conftest import ROOT
from tests.integration.test_readme import run_block

pytestmark = [
    pytest.mark.nats,
    pytest.mark.postgres,
    pytest.mark.tools("psql", "curl"),
]


def test_scale_out_walkthrough_runs() -> None:
    out = run_block(ROOT / "docs" / "scale-out.md", "scale-out", timeout=300)
    assert '"role":"collect"' in out
    assert '"log":"nats"' in out
    assert out.count('"accepted":1') == 4
    assert "loaded 4" in out
    assert (
        "{'received': 4, 'loaded': 4, 'quarantined': 0, 'duplicates': 0, "
        "'in_flight': 0, 'suppressed': 0}" in out
    )


def test_scale_out_walkthrough_with_port_plus_one_taken() -> None:
    """The block used to take PORT+1 for its second collector blindly: with that port busy
    it waited 120 s and left a collector and two loaders running. Now both ports are given
    (PORT, PORT2), so a busy PORT+1 is nobody's business."""
    for _ in range(50):
        port = free_port()
        busy = socket.socket()
        try:
            busy.bind(("127.0.0.1", port + 1))
        except OSError:
            busy.close()
            continue
        break
    else:
        pytest.fail("no port with a free neighbour")
    busy.listen(1)
    try:
        out = run_block(ROOT / "docs" / "scale-out.md", "scale-out", 300, PORT=str(port))
    finally:
        busy.close()
    assert "loaded 4" in out


def test_a_collector_that_cannot_bind_fails_the_block_at_once() -> None:
    """PORT2 taken: the block stops with the collector's one-line error (not a 120 s hang)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        with pytest.raises(AssertionError, match="already in use"):
            run_block(ROOT / "docs" / "scale-out.md", "scale-out", 300, PORT2=str(taken))
