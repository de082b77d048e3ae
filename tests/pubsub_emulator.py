"""Where the Pub/Sub tests find a service: ``PUBSUB_EMULATOR_HOST`` if set; else Google
Cloud itself when ``PUBSUB_PROJECT_ID`` and credentials (``GOOGLE_APPLICATION_CREDENTIALS``)
are set; else the Pub/Sub emulator of the machine image (``google-cloud-cli-pubsub-emulator``,
a Java program) is started on 127.0.0.1 and stopped with its process group. Without
``google-cloud-pubsub`` (a dev dependency) the tests skip, and fail when ``CI=true``; without
any service they skip even then: the emulator comes from no package registry."""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

EMULATOR = Path("/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator")
TEST_PROJECT = "gristmill-test"


def _skip(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true requires it)")
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def pubsub_service(tmp: Path) -> Iterator[str]:
    """Yields the project to use, with the environment pointing the client at the service."""
    if importlib.util.find_spec("google.cloud.pubsub_v1") is None:
        _skip("google-cloud-pubsub is not installed (pip install gristmill[pubsub])")
    if os.environ.get("PUBSUB_EMULATOR_HOST"):
        yield os.environ.get("PUBSUB_PROJECT_ID", TEST_PROJECT)
        return
    if os.environ.get("PUBSUB_PROJECT_ID") and os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
        yield os.environ["PUBSUB_PROJECT_ID"]
        return
    script = EMULATOR if EMULATOR.exists() else None
    if script is None or shutil.which("java") is None:
        # Not a registry package (the machine image carries it): skipped even when CI=true,
        # like the BigQuery and Snowflake live suites.
        pytest.skip(
            "no Pub/Sub: set PUBSUB_EMULATOR_HOST, or credentials and PUBSUB_PROJECT_ID "
            "(or install the image's google-cloud-cli-pubsub-emulator)"
        )
    port = _free_port()
    log = (tmp / "pubsub-emulator.log").open("wb")
    proc = subprocess.Popen(
        [str(script), "--host=127.0.0.1", f"--port={port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # the script execs java; its group is stopped as a whole
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                assert proc.poll() is None, "the Pub/Sub emulator exited"
                assert time.monotonic() < deadline, "the Pub/Sub emulator did not listen"
                time.sleep(0.1)
        os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{port}"
        yield TEST_PROJECT
    finally:
        os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
