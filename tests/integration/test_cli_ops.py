"""The CLI as an operator meets it, run as a real process: every error is one line saying what
to do (never a traceback), ``--help`` imports no engine, read-only commands create nothing,
tables survive a pipe, ``serve`` announces its URL only once it listens, and a NATS consumer
with ``--max-idle`` exits cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from gristmill.config import Settings
from gristmill.demo.process import free_port
from gristmill.runtime import Runtime
from tests.conftest import PACKS


@dataclass
class Done:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.strip()]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRISTMILL_")}
    env.pop("COLUMNS", None)
    return {**env, "GRISTMILL_PACKS_DIR": str(PACKS), **extra}


@contextmanager
def started(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """``gristmill <args>`` in its own process group, killed (group and all) on the way out."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gristmill", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()  # reaps it and closes the pipes


def run(args: list[str], timeout: float = 120, **env: str) -> Done:
    with started(args, _env(**env)) as proc:
        out, err = proc.communicate(timeout=timeout)
        return Done(proc.returncode, out, err)


def used_dir(tmp_path: Path) -> Path:
    """A data directory that has run once (so read-only commands open it)."""
    data = tmp_path / "d"
    Runtime(Settings(data_dir=data, packs_dir=PACKS)).stop()
    return data


def assert_one_line_error(r: Done, *words: str) -> None:
    assert r.code in (1, 2), r
    assert "Traceback" not in r.err + r.out, r.err
    assert len(r.err_lines) == 1, r.err
    assert r.err_lines[0].startswith("error: "), r.err
    for w in words:
        assert w in r.err_lines[0], r.err


# -- one line per error -----------------------------------------------------------------------


def test_bad_pack_path_is_one_line(tmp_path: Path) -> None:
    r = run(["status", "-d", str(tmp_path / "d"), "--pack", str(tmp_path / "nowhere")])
    assert_one_line_error(r, "pack.yaml")
    assert r.code == 2


def test_bad_settings_name_the_variable(tmp_path: Path) -> None:
    r = run(["status", "-d", str(tmp_path / "d")], GRISTMILL_SERVER__PORT="eighty")
    assert_one_line_error(r, "GRISTMILL_SERVER__PORT")
    assert r.code == 2


def test_unknown_quarantine_id_is_one_line(tmp_path: Path) -> None:
    r = run(["quarantine", "show", "q_nope", "-d", str(used_dir(tmp_path))])
    assert_one_line_error(r, "q_nope", "quarantine list")


@pytest.mark.postgres
def test_unreachable_warehouse_is_one_line(tmp_path: Path) -> None:
    r = run(
        ["status", "-d", str(used_dir(tmp_path))],
        GRISTMILL_WAREHOUSE__TYPE="postgres",
        GRISTMILL_WAREHOUSE__DSN=f"host=127.0.0.1 port={free_port()} dbname=x user=x",
    )
    assert_one_line_error(r, "cannot reach PostgreSQL")


@pytest.mark.rabbitmq
def test_unreachable_broker_is_one_line(tmp_path: Path) -> None:
    r = run(
        ["status", "-d", str(used_dir(tmp_path))],
        GRISTMILL_LOG__TYPE="rabbitmq",
        GRISTMILL_LOG__URL=f"amqp://guest:guest@127.0.0.1:{free_port()}/",
    )
    assert_one_line_error(r, "cannot reach RabbitMQ")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    args = ["status", "-d", str(tmp_path / "d"), "--pack", str(tmp_path / "nowhere")]
    assert "Traceback" in run(["--debug", *args]).err
    assert "Traceback" in run(args, GRISTMILL_DEBUG="1").err


# -- serve ------------------------------------------------------------------------------------


def _serve(data: Path, port: int) -> list[str]:
    return ["serve", "-d", str(data), "--port", str(port)]


def test_serve_announces_its_url_once_listening_and_a_second_serve_fails_cleanly(
    tmp_path: Path,
) -> None:
    port = free_port()
    with started(_serve(tmp_path / "d", port), _env()) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the announcement (or exit)
        assert f"http://127.0.0.1:{port}" in line, (line, proc.poll())
        # Announced means bound and listening: connecting must work right now.
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass
        # The same port again: one line, non-zero, and the data directory is not touched.
        other = run(_serve(tmp_path / "other", port))
        assert_one_line_error(other, f"127.0.0.1:{port}", "in use")
        assert not (tmp_path / "other").exists()
        # Another port on the same (locked) data directory: one line too.
        locked = run(_serve(tmp_path / "d", free_port()))
        assert_one_line_error(locked, "locked")


# -- --help stays light -----------------------------------------------------------------------


HEAVY = ("duckdb", "pyarrow", "fastapi", "sqlalchemy", "uvicorn", "gristmill.runtime")


def test_help_imports_no_engine() -> None:
    code = (
        "import sys\n"
        "from gristmill.cli.main import app\n"
        "try:\n"
        "    app(['--help'], prog_name='gristmill')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('LOADED', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert "Commands" in r.stdout, r.stdout + r.stderr
    assert "quarantine" in r.stdout, r.stdout
    assert "LOADED []" in r.stdout, r.stdout


def test_listed_help_matches_each_command() -> None:
    """The one-line help in the lazy table is each command's own (no drift)."""
    from gristmill.cli.main import COMMANDS, load_command

    for spec in COMMANDS:
        real = load_command(spec)
        own = " ".join((real.help or "").split())
        assert own.startswith(spec.help.rstrip(".").split(";")[0]), (spec.name, own)


# -- read-only commands create nothing --------------------------------------------------------


READ_ONLY = [
    ["status"],
    ["status", "--json"],
    ["quarantine", "list"],
    ["quarantine", "list", "--json"],
    ["keys", "list"],
    ["exports", "list"],
    ["audit"],
    ["provision"],
    ["provision", "--target", "postgres"],
    ["query", "--metrics", "gmv"],
]


@pytest.mark.parametrize("args", READ_ONLY, ids=[" ".join(a) for a in READ_ONLY])
def test_read_only_commands_leave_an_empty_dir_unchanged(tmp_path: Path, args: list[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run([*args, "-d", str(empty)])
    assert list(empty.iterdir()) == [], r
    assert "Traceback" not in r.err, r.err
    assert "building rollup" not in r.err, r.err
    assert len(r.err_lines) <= 1, r.err
    if args == ["status", "--json"]:
        assert orjson.loads(r.out)["totals"]["received"] == 0


def test_status_table_in_a_pipe_is_whole(tmp_path: Path) -> None:
    r = run(["status", "-d", str(used_dir(tmp_path))])
    assert r.code == 0, r
    assert "…" not in r.out
    header = next(ln for ln in r.out.splitlines() if "source" in ln)
    assert "received" in header, r.out
    for col in ("pack", "source", "loaded", "quarantined", "duplicates", "in_flight", "balanced"):
        assert col in header, r.out
    assert "building rollup" not in r.err


# -- consume nats --max-idle ------------------------------------------------------------------


async def _nats_stream(name: str, subject: str, create: bool) -> None:
    import nats

    nc = await nats.connect("nats://127.0.0.1:4222", connect_timeout=5, max_reconnect_attempts=0)
    try:
        js = nc.jetstream()
        if create:
            await js.add_stream(name=name, subjects=[f"{subject}.>"])
            await js.publish(f"{subject}.new", b'{"event_type": "nope"}')
        else:
            await js.delete_stream(name)
    finally:
        await nc.close()


@pytest.mark.nats
def test_consume_nats_max_idle_exits_cleanly(tmp_path: Path) -> None:
    stream, subject = f"GMCLI_{uuid.uuid4().hex[:8]}", f"gmcli.{uuid.uuid4().hex[:8]}"
    asyncio.run(_nats_stream(stream, subject, create=True))
    try:
        args = ["consume", "nats", "--url", "nats://127.0.0.1:4222", "--stream", stream]
        args += ["--subject", f"{subject}.>", "--durable", "gmcli", "--max-idle", "2"]
        r = run([*args, "-d", str(tmp_path / "d")], timeout=60)
    finally:
        asyncio.run(_nats_stream(stream, subject, create=False))
    assert r.code == 0, r
    assert "drain" not in r.err.lower(), r.err
    assert "Traceback" not in r.err, r.err
    assert "stopped; 1 messages acknowledged" in r.err


def test_readme_names_the_quarantine_json_keys(tmp_path: Path) -> None:
    """The keys README documents for ``quarantine list --json`` are the ones it prints."""
    import re

    from tests.conftest import ROOT
    from tests.factories import order

    data = used_dir(tmp_path)
    rt = Runtime(Settings(data_dir=data, packs_dir=PACKS))
    try:
        raw = orjson.dumps([order("order_refunded")])  # not in the pack: quarantined
        p = rt.collector.prepare(pack="marketplace", source="web", dialect="native", raw=raw)
        rt.collector.submit_sync(p)
        rt.loader.drain()
    finally:
        rt.stop()
    r = run(["quarantine", "list", "--json", "-d", str(data)])
    rows = orjson.loads(r.out)
    assert rows, r
    lines = (ROOT / "README.md").read_text().splitlines()
    row = next(ln for ln in lines if "`gristmill quarantine list` |" in ln)
    keys = re.sub(r"\([^)]*\)", "", row.split("--json")[1].split("|")[0])  # minus asides
    documented = re.findall(r"`([a-z_]+)`", keys)
    assert documented == list(rows[0]), (documented, list(rows[0]))
