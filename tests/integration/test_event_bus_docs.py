"""The blocks of docs/event-bus.md run as written: the seed's names as settings, and
``gristmill consume pubsub`` against the Pub/Sub emulator (tests/pubsub_emulator.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.integration.test_readme import run_block
from tests.pubsub_emulator import pubsub_service

DOC = ROOT / "docs" / "event-bus.md"


def test_event_bus_env_block_runs() -> None:
    out = run_block(DOC, "event-bus-env").splitlines()
    assert out == [
        "kafka analytics-events 10.0.0.1:9092,10.0.0.2:9092 250 1.5",
        "sqlite",
        "pubsub acme-prod analytics-events",
    ]


def test_consume_pubsub_block_runs(tmp_path: Path) -> None:
    with pubsub_service(tmp_path):
        if not os.environ.get("PUBSUB_EMULATOR_HOST"):
            pytest.skip("the block creates topics in a project of its own: emulator only")
        out = run_block(DOC, "consume-pubsub")
    assert "consume pubsub: stopped; 51 messages acknowledged" in out
    assert "51 received" in out
