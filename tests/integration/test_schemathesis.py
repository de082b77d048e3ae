"""Schemathesis against the real server: every operation of the OpenAPI document, every
check (``--checks all``), both valid and invalid data, seeded and bounded.

The server is ``gristmill serve`` on 127.0.0.1 (a child process, stopped in the fixture
whatever happens). Ingest operations send a write key, every other one an operator key: the
configuration is ``tests/integration/schemathesis.toml``. Where the contract answers a
well-formed request with a per-event verdict rather than a status, that file says so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gristmill.demo.process import ServerProcess, free_port
from gristmill.runtime import Runtime
from tests.conftest import PACKS, make_settings

CONFIG = Path(__file__).with_name("schemathesis.toml")
ST = Path(sys.executable).with_name("st")
BUDGET_S = 480


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, dict[str, str]]]:
    data = tmp_path_factory.mktemp("st") / "data"
    rt = Runtime(make_settings(data))
    keys = {
        "GRISTMILL_ST_WRITE_KEY": rt.meta.create_key(
            "write", "st", pack="marketplace", source="web"
        )[1],
        "GRISTMILL_ST_OPERATOR_KEY": rt.meta.create_key("secret", "st", role="operator")[1],
    }
    rt.stop()
    server = ServerProcess(data, free_port(), packs_dir=PACKS)
    try:
        server.start()
        yield server, keys
    finally:
        server.stop()


def test_schemathesis_all_checks(
    server: tuple[ServerProcess, dict[str, str]], tmp_path: Path
) -> None:
    proc, keys = server
    args = [
        str(ST),
        "--config-file",
        str(CONFIG),
        "run",
        f"{proc.url}/openapi.json",
        "--checks",
        "all",
        "--workers",
        "1",
        "--generation-deterministic",
        "--no-color",
        "--output-truncate",
        "false",
        "--report-dir",
        str(tmp_path),
    ]
    env = {**os.environ, **keys}
    child = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        out, _ = child.communicate(timeout=BUDGET_S)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        out, _ = child.communicate()
        pytest.fail("schemathesis ran over its budget:\n" + out.decode(errors="replace")[-20000:])
    text = out.decode(errors="replace")
    assert child.returncode == 0, text[-30000:] + "\n" + proc.tail()
    assert "No issues found" in text or " passed" in text, text[-5000:]
