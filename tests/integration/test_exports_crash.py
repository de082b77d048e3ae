"""A worker killed (SIGKILL) in the middle of writing an export: a new worker resumes the
job and the file's bytes equal those of a clean, uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from gristmill.auth.permissions import OPERATOR, Principal
from gristmill.demo.marketplace import DemoConfig, generate
from gristmill.exports import ExportJob
from gristmill.exports.store import ExportStore
from gristmill.runtime import Runtime
from tests.conftest import PACKS, make_settings
from tests.integration.analytics_fixtures import send
from tests.procs import stop_group

LOCAL = Principal(kind="local", role=OPERATOR)
CHUNK = 100


def _running(store: ExportStore) -> ExportJob | None:
    for job in store.running():
        part = Path(f"{job.csv_path}.part")
        if part.exists() and part.stat().st_size > 0:
            return job
    return None


def test_killed_worker_is_resumed_and_writes_the_same_bytes(tmp_path: Path) -> None:
    data = tmp_path / "d"
    settings = make_settings(data, exports={"chunk_rows": CHUNK})
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=20)
    rt = Runtime(settings)
    try:
        traffic = generate(DemoConfig(events=5000, days=19, vendors=4, buyers=20, seed=3, end=end))
        send(rt, traffic.events)
        clean = rt.exports.create_rows_export(
            LOCAL, "marketplace", "marketplace_rows", start=start, end=end, as_job=True
        )
        assert isinstance(clean, ExportJob)
        rt.exports.run_pending()
        done = rt.exports.store.get(clean.id)
        assert done is not None
        assert done.status == "succeeded"
        assert done.rows is not None
        assert done.rows > 5 * CHUNK  # several chunks, so a kill lands between two
        assert done.csv_path is not None
        clean_bytes = Path(done.csv_path).read_bytes()
        # Expire it (the governance hook), so asking again makes a new job of the same rows.
        assert rt.exports.expire(datetime.now(UTC) + timedelta(seconds=1)) == [clean.id]
        assert not Path(done.csv_path).exists()
    finally:
        rt.stop()

    env = os.environ | {
        "GRISTMILL_DATA_DIR": str(data),
        "GRISTMILL_PACKS_DIR": str(PACKS),
        "GRISTMILL_PACKS": '["marketplace"]',
        "GRISTMILL_EXPORTS__CHUNK_ROWS": str(CHUNK),
        "GRISTMILL_EXPORTS__TEST_CHUNK_PAUSE_S": "0.25",
    }
    log = (tmp_path / "child.log").open("wb")
    child = subprocess.Popen(
        [sys.executable, "-m", "gristmill", "exports", "create", "marketplace",
         "marketplace_rows", "--start", start.isoformat(), "--end", end.isoformat(),
         "--as-job", "--json"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    engine = sa.create_engine(f"sqlite:///{data / 'meta.sqlite'}")
    store = ExportStore(engine)
    try:
        deadline = time.monotonic() + 120
        victim = None
        while victim is None:
            assert child.poll() is None, (tmp_path / "child.log").read_text()
            assert time.monotonic() < deadline, "the child never started writing"
            time.sleep(0.05)
            victim = _running(store)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        stop_group(child, 0)
        log.close()
        engine.dispose()
    assert victim.csv_path is not None
    assert not Path(victim.csv_path).exists()  # killed mid-file: only the .part is there

    rt = Runtime(settings)  # a new process's worker: it resumes the dead one's job
    try:
        rt.exports.start()
        deadline = time.monotonic() + 120
        while (job := rt.exports.store.get(victim.id)) is None or not job.finished:
            assert time.monotonic() < deadline, job
            time.sleep(0.05)
    finally:
        rt.stop()
    assert job.status == "succeeded", job.error
    assert job.attempts == 2  # the killed attempt is counted
    assert job.key == done.key  # same export, scope, period and watermark
    assert Path(victim.csv_path).read_bytes() == clean_bytes
    assert job.checksum == done.checksum
    assert job.reconciled is True
    assert not Path(f"{victim.csv_path}.part").exists()
