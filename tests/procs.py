"""Child processes of tests: started in their own session (``start_new_session=True``), so
the whole group — the child and anything it spawned — is stopped on success, failure or
timeout, and nothing outlives the test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any


def stop_group(proc: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    """SIGTERM to ``proc``'s process group, SIGKILL to it after ``grace_s`` (at once, with
    no SIGTERM, when ``grace_s`` is 0: what crash tests mean by kill -9); reaps ``proc``.
    Safe when it has exited already (leftovers in its group are still killed)."""
    if grace_s > 0:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


class Children:
    """Processes a test started; the ``children`` fixture stops every group at teardown,
    including after a failed assertion or a pytest-timeout."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def add(self, proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
        self.procs.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            stop_group(proc, 5.0 if proc.poll() is None else 0.0)
