"""``gristmill serve --workers 2`` as child processes: traffic from several sources while one
collector worker and then the loader are killed with SIGKILL. The supervisor restarts both;
every event answered 2xx is in the warehouse exactly once, nothing twice, and conservation
(``received = loaded + quarantined + duplicates + in_flight``) is exact across partitions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from gristmill.demo.process import free_port
from gristmill.log.sqlite_parts import PartitionedSQLiteLog
from gristmill.runtime import Runtime, read_server_file
from tests.conftest import PACKS, make_settings
from tests.factories import order
from tests.procs import Children

SOURCES = ("web", "app", "pos")
BATCHES = 60
"""Per source; 20 events each: 3,600 events in all."""
PARTS = {"type": "sqlite", "partitions": 2, "lease_ttl_s": 2.0}


def workers(data: Path) -> dict[str, dict[str, Any]]:
    try:
        info = json.loads((data / "workers.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {c["name"]: c for c in info["children"] if c["pid"] is not None}


def all_ready(data: Path) -> bool:
    """Every child listens (the supervisor heard from each on its ready pipe)."""
    try:
        return bool(json.loads((data / "workers.json").read_text())["ready"])
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def wait_for(what: str, check: Any, proc: subprocess.Popen[bytes], out: Path) -> Any:
    deadline = time.monotonic() + 120
    while not (got := check()):
        assert proc.poll() is None, out.read_text()[-3000:]
        assert time.monotonic() < deadline, f"{what}: {out.read_text()[-3000:]}"
        time.sleep(0.1)
    return got


def start_workers(
    tmp_path: Path, children: Children, env: dict[str, str], *args: str
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """``serve --workers 2`` over ``tmp_path / "data"`` (two log partitions), output in
    ``serve.log``, waited on until every child listens: the supervisor, its port, the log."""
    data = tmp_path / "data"
    out = tmp_path / "serve.log"
    port = free_port()
    env = {**os.environ, "GRISTMILL_PACKS_DIR": str(PACKS), "GRISTMILL_LOG__PARTITIONS": "2", **env}
    argv = [sys.executable, "-m", "gristmill", "serve", "--data-dir", str(data), "--workers", "2"]
    argv += ["--port", str(port), *args]
    with open(out, "ab") as fh:
        sup = children.add(
            subprocess.Popen(
                argv, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
            )
        )
    wait_for("workers up", lambda: all_ready(data), sup, out)
    return sup, port, out


class Sender:
    """One source's client: batches re-sent until answered 2xx (as an SDK would), so an
    append that a killed worker made but never acknowledged reaches the log twice."""

    def __init__(self, url: str, key: str, source: str) -> None:
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"})
        self.source = source
        self.acked: list[str] = []
        self.sent: set[str] = set()
        self.failures = 0
        self.done = 0

    def run(self) -> None:
        try:
            for _ in range(BATCHES):
                events = [order(event_id=f"{self.source}-{uuid.uuid4().hex}") for _ in range(20)]
                self.sent |= {e["event_id"] for e in events}
                for _attempt in range(100):
                    try:
                        # A fresh connection per batch: the kernel hands each to a worker.
                        r = self.client.post(
                            "/v1/events", json=events, headers={"Connection": "close"}
                        )
                    except httpx.HTTPError:
                        self.failures += 1
                        time.sleep(0.05)
                        continue
                    if r.status_code == 200:
                        self.acked += [e["event_id"] for e in events]
                        break
                    self.failures += 1
                    assert r.status_code in (502, 503), r.text
                    time.sleep(0.05)
                self.done += 1
        finally:
            self.client.close()


@pytest.mark.slow
def test_kill_a_worker_and_the_loader_loses_and_duplicates_nothing(
    tmp_path: Path, children: Children
) -> None:
    data = tmp_path / "data"
    settings = make_settings(data, log=PARTS)
    rt = Runtime(settings)
    try:
        keys = {s: rt.meta.create_key("write", s, pack="marketplace", source=s)[1] for s in SOURCES}
    finally:
        rt.stop()
    sup, port, out = start_workers(
        tmp_path, children, {"GRISTMILL_LOG__LEASE_TTL_S": "2"}, "--api-port", str(free_port())
    )
    url = f"http://127.0.0.1:{port}"
    assert _answers(url)

    senders = [Sender(url, keys[s], s) for s in SOURCES]
    threads = [threading.Thread(target=s.run) for s in senders]
    for t in threads:
        t.start()
    progress = lambda: min(s.done for s in senders)  # noqa: E731
    wait_for("a third sent", lambda: progress() >= BATCHES // 3, sup, out)
    victim = workers(data)["collect-0"]["pid"]
    os.kill(victim, signal.SIGKILL)
    wait_for("two thirds sent", lambda: progress() >= 2 * BATCHES // 3, sup, out)
    loader = workers(data)["loader"]["pid"]
    os.kill(loader, signal.SIGKILL)
    for t in threads:
        t.join(300)
    assert all(s.done == BATCHES for s in senders)

    # Both come back (the loader last takes over its dead self's leases once they lapse).
    restarted = wait_for(
        "restarts",
        lambda: (
            all_ready(data)
            and (w := workers(data))["collect-0"]["pid"] != victim
            and w["loader"]["pid"] != loader
            and w
        ),
        sup,
        out,
    )
    assert restarted["collect-0"]["restarts"] >= 1
    acked = {e for s in senders for e in s.acked}
    assert len(acked) == len(SOURCES) * BATCHES * 20
    stats = wait_for("all loaded", lambda: _loaded(data, len(acked)), sup, out)
    assert stats["balanced"], stats
    pids = [c["pid"] for c in workers(data).values()]
    sup.send_signal(signal.SIGTERM)  # the supervisor alone: it stops its children
    assert sup.wait(60) == 0, out.read_text()[-3000:]
    assert not (data / "workers.json").exists()
    assert not [p for p in pids if _alive(p)]

    rt = Runtime(make_settings(data, log=PARTS))
    try:
        ids = [
            str(v)
            for v in rt.warehouse.query_sql("SELECT event_id FROM marketplace.marketplace_events")
            .column("event_id")
            .to_pylist()
        ]
        assert len(ids) == len(set(ids)), "an event was loaded twice"
        assert acked <= set(ids), f"{len(acked - set(ids))} acknowledged events are missing"
        assert set(ids) <= {e for s in senders for e in s.sent}
        c = rt.conservation()
        assert c.balanced, c.as_dict()
        assert c.total("in_flight") == 0  # the restarted loader loaded everything
        assert c.total("loaded") == len(ids)
        assert c.total("received") == len(ids) + c.total("duplicates")
        assert isinstance(rt.log, PartitionedSQLiteLog)
        per_partition = _received_per_partition(rt.log)
        assert all(n > 0 for n in per_partition), per_partition  # both workers took traffic
        print(
            f"serve --workers 2, worker and loader kill -9: {c.as_dict()['totals']}, "
            f"client retries {sum(s.failures for s in senders)}, per partition {per_partition}"
        )
    finally:
        rt.stop()


def _alive(pid: int) -> bool:
    """Running (a zombie nobody reaped, such as an orphan under a PID 1 that does not reap,
    has stopped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


@pytest.mark.parametrize("balance", ["reuseport", "accept"])
def test_children_stop_when_the_supervisor_is_killed(
    tmp_path: Path, children: Children, balance: str
) -> None:
    data = tmp_path / "data"
    sup, port, _ = start_workers(
        tmp_path, children, {}, "--api-port", str(free_port()), "--balance", balance
    )
    up = workers(data)
    assert _answers(f"http://127.0.0.1:{port}")
    sup.kill()
    sup.wait()
    deadline = time.monotonic() + 60
    while left := [c["pid"] for c in up.values() if _alive(c["pid"])]:
        assert time.monotonic() < deadline, f"orphans still running: {left}"
        time.sleep(0.1)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _loaded(data: Path, acked: int) -> dict[str, Any] | None:
    """The loader process's conservation once nothing is in flight and every ack is counted."""
    info = read_server_file(data)
    if info is None:
        return None
    try:
        r = httpx.get(
            f"{info['url']}/v1/pipeline/stats",
            headers={"Authorization": f"Bearer {info['token']}"},
            timeout=10,
        )
    except httpx.HTTPError:
        return None
    if r.status_code != 200:
        return None
    stats: dict[str, Any] = r.json()
    t = stats["totals"]
    return stats if t["in_flight"] == 0 and t["loaded"] >= acked else None


def _received_per_partition(log: PartitionedSQLiteLog) -> list[int]:
    return [sum(f.snapshot(f"loader.p{p}").received.values()) for p, f in enumerate(log.files)]


def test_status_and_readyz_show_depth_per_partition(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from gristmill.api.app import create_app
    from gristmill.cli import app

    data = tmp_path / "data"
    rt = Runtime(make_settings(data, log=PARTS))
    try:
        key = rt.meta.create_key("write", "t", pack="marketplace", source="web")[1]
        with TestClient(create_app(rt, start=False)) as client:
            for _ in range(3):  # round robin: partitions 0, 1, 0
                r = client.post(
                    "/v1/events",
                    json=[order() for _ in range(5)],
                    headers={"Authorization": f"Bearer {key}"},
                )
                assert r.status_code == 200, r.text
            depth = client.get("/readyz").json()["log_depth"]
        assert [p["depth_events"] for p in depth["by_partition"]] == [10, 5]
        assert depth["depth_events"] == 15
        worker = Runtime(make_settings(data, log={**PARTS, "append_partition": 0}), "collect")
        try:  # a worker's /metrics: the depth of every partition, not only its own
            from gristmill.api.metrics import PipelineCollector, RequestCounters

            gauges = {
                m.name: m.samples[0].value
                for m in PipelineCollector(worker, RequestCounters()).collect()
                if m.samples
            }
            assert gauges["gristmill_log_depth_bytes"] == depth["depth_bytes"] > 0
        finally:
            worker.stop()
    finally:
        rt.stop()
    monkeypatch.setenv("GRISTMILL_PACKS_DIR", str(PACKS))
    monkeypatch.setenv("GRISTMILL_DATA_DIR", str(data))
    monkeypatch.setenv("GRISTMILL_LOG__PARTITIONS", "2")
    monkeypatch.setenv("COLUMNS", "200")
    cli = CliRunner()
    got = json.loads(cli.invoke(app, ["status", "--json"]).output)
    parts = got["log"]["partitions"]
    assert [(p["partition"], p["depth_events"], p["depth_records"]) for p in parts] == [
        (0, 10, 2),
        (1, 5, 1),
    ]
    assert got["balanced"]
    assert got["totals"]["in_flight"] == 15
    text = cli.invoke(app, ["status"]).output
    assert "partition 1: 1 records / 5 events" in text


def test_scale_out_doc_serve_workers_block_runs() -> None:
    from tests.conftest import ROOT
    from tests.integration.test_readme import run_block

    out = run_block(ROOT / "docs" / "scale-out.md", "serve-workers", timeout=240)
    assert out.count('"accepted":1') == 4
    assert "partition 0: 0 records" in out  # status: the depth of each partition
    assert "partition 1: 0 records" in out
    assert "collect-1 (pid" in out  # status: the supervisor's workers
    assert "total" in out


def test_an_erasure_reaches_collect_workers_and_drains_every_partition(tmp_path: Path) -> None:
    """The erasure is requested in the loader's process; a collect worker re-reads the
    suppression list, and the erasure drains and scrubs both partition files."""
    from gristmill.core.subjects import Mode
    from gristmill.governance.erasure import Subject

    data = tmp_path / "data"
    gov = {"suppression_refresh_s": 0.05}
    rt = Runtime(make_settings(data, log=PARTS, governance=gov))
    worker = Runtime(
        make_settings(data, log={**PARTS, "append_partition": 1}, governance=gov), "collect"
    )
    try:
        worker.start()
        assert not worker.suppression.current
        rid = rt.governance.request_erasure(Subject(("buyer-gone",)), Mode.DELETE, "t")
        deadline = time.monotonic() + 60
        while not worker.suppression.current:
            assert time.monotonic() < deadline, "the worker never saw the suppression"
            time.sleep(0.02)
        rt.governance.run_pending()
        record = rt.governance.status(rid)
        assert record is not None
        assert record.status == "completed", record
        assert record.report["log"]["log"] == "sqlite"
    finally:
        worker.stop()
        rt.stop()
