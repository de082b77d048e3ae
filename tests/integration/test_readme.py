"""The README walkthrough runs as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from gristmill.demo.process import free_port
from tests.conftest import ROOT


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_readme_walkthrough_runs() -> None:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"```bash\n# walkthrough\n(.*?)```", text, re.S)
    assert match, "README lost its walkthrough block"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRISTMILL_")}
    env["PORT"] = str(free_port())
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", match.group(1)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert '"accepted":2,"rejected":1' in out
    assert '"reason":"schema_violation"' in out
    assert '"status":"loaded"' in out
    assert "{'received': 4, 'loaded': 2, 'quarantined': 1, 'duplicates': 1, 'in_flight': 0}" in out
