"""Fixtures shared by the analytics tests (a loaded marketplace warehouse per module)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.integration.analytics_fixtures import loaded

__all__ = ["loaded"]


@pytest.fixture
def rt(tmp_path: Path) -> Iterator[Runtime]:
    """A runtime for a live server (the server's lifespan starts and stops it)."""
    runtime = Runtime(make_settings(tmp_path / "d"))
    yield runtime
    runtime.stop()
