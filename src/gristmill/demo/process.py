"""Run ``gristmill serve`` as a child process: for crash tests (kill -9) and benchmarks."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import BinaryIO

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Child:
    """A gristmill child process with its log file kept open across restarts: crash tests
    kill it with SIGKILL, everyone else stops it with SIGTERM (then SIGKILL after 30 s)."""

    proc: subprocess.Popen[bytes] | None
    log: BinaryIO

    def tail(self, lines: int = 40) -> str:
        """The last lines of the child's log (for a failing test's message)."""
        self.log.flush()
        text = Path(self.log.name).read_text(errors="replace").splitlines()[-lines:]
        state = "not started" if self.proc is None else f"exit code {self.proc.poll()}"
        return f"--- {self.log.name} ({state}) ---\n" + "\n".join(text)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class ServerProcess(_Child):
    def __init__(
        self,
        data_dir: Path,
        port: int,
        *,
        packs_dir: Path,
        env: dict[str, str] | None = None,
        role: str = "all",
        args: tuple[str, ...] = (),
    ) -> None:
        self.role = role
        self.args = args
        """More ``serve`` options (``--workers 2 --api-port …``)."""
        self.data_dir = data_dir
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.env = {**os.environ, "GRISTMILL_PACKS_DIR": str(packs_dir), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = open(data_dir.parent / f"server-{port}.log", "ab")  # noqa: SIM115 - kept open across restarts

    def start(self, timeout_s: float = 60) -> None:
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            [
                sys.executable,
                "-m",
                "gristmill",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--port",
                str(self.port),
                "--role",
                self.role,
                *self.args,
            ],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"server exited with {self.proc.returncode}; see {self.log.name}"
                )
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise TimeoutError("server did not become healthy")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class LoaderProcess(_Child):
    """``gristmill load`` as a child process (scaled-out mode); killable like the server."""

    def __init__(
        self,
        data_dir: Path,
        *,
        packs_dir: Path,
        env: dict[str, str] | None = None,
        max_partitions: int | None = None,
        name: str = "loader",
    ) -> None:
        self.data_dir = data_dir
        self.max_partitions = max_partitions
        self.env = {**os.environ, "GRISTMILL_PACKS_DIR": str(packs_dir), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = open(data_dir.parent / f"{name}.log", "ab")  # noqa: SIM115 - kept open across restarts

    def start(self) -> None:
        args = [sys.executable, "-m", "gristmill", "load", "--data-dir", str(self.data_dir)]
        if self.max_partitions is not None:
            args += ["--max-partitions", str(self.max_partitions)]
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter and fixed arguments
            args, env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None
