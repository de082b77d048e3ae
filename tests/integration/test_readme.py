"""The README walkthrough and the walkthroughs of docs/collectors.md and docs/warehouses.md
(ClickHouse) run as written."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from gristmill.demo.process import free_port
from tests.conftest import ROOT

needs_curl = pytest.mark.tools("curl")


def run_block(doc: Path, name: str, timeout: float = 120, **env_extra: str) -> str:
    """Run the ``# name`` bash block of ``doc`` from the repository root, with free ports in
    ``PORT`` and ``PORT2``. The block runs in its own process group, killed whole when it
    ends, fails or times out: servers it left running never outlive the test."""
    text = doc.read_text()
    match = re.search(rf"```bash\n# {name}\n(.*?)```", text, re.S)
    assert match, f"{doc.name} lost its {name} block"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRISTMILL_")}
    env["PORT"] = str(free_port())
    env["PORT2"] = str(free_port())
    env.update(env_extra)
    proc = subprocess.Popen(
        ["bash", "-euo", "pipefail", "-c", match.group(1)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"{doc.name} {name} block timed out after {timeout} s:\n{stdout}{stderr}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the block left behind
        if proc.poll() is None:
            proc.communicate()
    out = stdout + stderr
    assert proc.returncode == 0, out
    return out


@needs_curl
def test_readme_walkthrough_runs() -> None:
    out = run_block(ROOT / "README.md", "walkthrough")
    assert '"accepted":2,"rejected":1' in out
    assert '"reason":"schema_violation"' in out
    assert '"status":"loaded"' in out
    assert (
        "{'received': 4, 'loaded': 2, 'quarantined': 1, 'duplicates': 1, "
        "'in_flight': 0, 'suppressed': 0}" in out
    )


@needs_curl
def test_collectors_walkthrough_runs() -> None:
    out = run_block(ROOT / "docs" / "collectors.md", "collectors")
    assert '"success":true,"accepted":1,"rejected":0' in out  # Segment
    assert '{"status":1}' in out  # PostHog v0
    assert "\nok" in out  # Snowplow
    assert '"accepted":1' in out  # CloudEvents
    assert '{"event_id":"billing#1","status":"loaded"' in out  # traced as billing%231
    assert "sdk Stats(queued=1, sent=1" in out
    assert "outbox rows 1" in out
    assert "unmapped" in out
    assert "Cart Viewed" in out
    # four dialects + the unmapped one + the identify + the SDK's event; the outbox row stays
    assert (
        "{'received': 7, 'loaded': 6, 'quarantined': 1, 'duplicates': 0, "
        "'in_flight': 0, 'suppressed': 0}" in out
    )
    assert "source apps 6 1 0.142857 unmapped" in out  # per source, over the last hour
    assert "pin apps segment.identify 1" in out
    assert "CREATE TABLE IF NOT EXISTS gristmill_outbox" in out


@needs_curl
@pytest.mark.clickhouse
def test_clickhouse_walkthrough_runs() -> None:
    out = run_block(ROOT / "docs" / "warehouses.md", "clickhouse")
    # the pack tables (and the default Segment traits table): MergeTree partitioned by day
    assert out.splitlines()[0] == "3"
    assert "-- applied to clickhouse: nothing to do" in out
    assert '"warehouse":"clickhouse"' in out
    assert "orders 1 gmv 125000" in out
