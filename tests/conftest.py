"""Shared fixtures and the service-marker policy.

A test marked with a service (postgres, rabbitmq, redis, nats, kafka, clickhouse, browser,
prometheus) skips with a reason when the service is absent — and fails when ``CI=true``,
because CI must exercise it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from gristmill.config import Settings
from gristmill.runtime import Runtime
from tests.procs import Children

ROOT = Path(__file__).resolve().parents[1]
PACKS = ROOT / "packs"

SERVICES: dict[str, tuple[str, int]] = {
    "postgres": ("127.0.0.1", 5432),
    "mariadb": ("127.0.0.1", 3306),
    "rabbitmq": ("127.0.0.1", 5672),
    "redis": ("127.0.0.1", 6379),
    "nats": ("127.0.0.1", 4222),
}


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def pytest_runtest_setup(item: pytest.Item) -> None:
    in_ci = os.environ.get("CI", "").lower() == "true"
    for name, (host, port) in SERVICES.items():
        if item.get_closest_marker(name) and not _port_open(host, port):
            msg = f"{name} is not reachable on {host}:{port}"
            if in_ci:
                pytest.fail(f"{msg} (CI=true requires it)")
            pytest.skip(msg)
    if item.get_closest_marker("clickhouse") and importlib.util.find_spec("chdb") is None:
        if in_ci:
            pytest.fail("chdb is not installed (CI=true requires it)")
        pytest.skip("chdb is not installed (pip install gristmill[clickhouse])")
    if item.get_closest_marker("browser") and not shutil.which("chromium"):
        if in_ci:
            pytest.fail("chromium is not installed (CI=true requires it)")
        pytest.skip("chromium is not installed")
    _tools_missing(item, in_ci)
    if item.get_closest_marker("prometheus"):
        missing = [b for b in ("prometheus", "promtool", "amtool") if not shutil.which(b)]
        if missing:
            msg = f"{', '.join(missing)} not installed"
            msg += " (apt-get install prometheus prometheus-alertmanager)"
            if in_ci:
                pytest.fail(f"{msg}; CI=true requires it")
            pytest.skip(msg)


# Command-line tools the doc walkthroughs call, and the Debian package `make test` installs
# for each when CI=true (Makefile, target `tools`).
TOOLS = {"curl": "curl", "psql": "postgresql-client"}


def _tools_missing(item: pytest.Item, in_ci: bool) -> None:
    marker = item.get_closest_marker("tools")
    if marker is None:
        return
    missing = [t for t in marker.args if not shutil.which(t)]
    if missing:
        pkgs = " ".join(TOOLS.get(t, t) for t in missing)
        msg = f"{', '.join(missing)} not installed (apt-get install {pkgs}, or make test CI=true)"
        if in_ci:
            pytest.fail(f"{msg}; CI=true requires it")
        pytest.skip(msg)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    from tests.brokers import drop_all

    drop_all()


def make_settings(tmp: Path, **overrides: object) -> Settings:
    kwargs: dict[str, object] = {"data_dir": tmp, "packs_dir": PACKS, "packs": ["marketplace"]}
    return Settings(**(kwargs | overrides))  # type: ignore[arg-type]


@pytest.fixture
def children() -> Iterator[Children]:
    """Register child processes (started with ``start_new_session=True``): their process
    groups are stopped when the test ends, however it ends."""
    kids = Children()
    try:
        yield kids
    finally:
        kids.stop_all()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path / "data")


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    try:
        yield rt
    finally:
        rt.stop()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    """An app over a runtime whose loader does NOT run in the background: tests call
    ``runtime.loader.drain()`` to load deterministically."""
    app = create_app(runtime, start=False)
    with TestClient(app) as c:
        yield c


@pytest.fixture
def write_key(runtime: Runtime) -> str:
    return runtime.meta.create_key("write", "test", pack="marketplace", source="web")[1]


@pytest.fixture
def operator_key(runtime: Runtime) -> str:
    return runtime.meta.create_key("secret", "ops", role="operator")[1]
