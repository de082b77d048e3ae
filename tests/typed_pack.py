"""The typed fixture pack (tests/fixtures/packs/typed: one promoted column of every type) and
requests framed by the real collector over it, for the frame and log tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from gristmill.collect.service import Parser, Prepared
from gristmill.config import LimitSettings
from gristmill.pack.models import Pack

TYPED = Path(__file__).resolve().parent / "fixtures" / "packs" / "typed"

AT = 1_800_000_000_000_000
"""Received in 2027, so the events' 2026 times are not clamped as from the future."""


def event(eid: str, props: dict[str, Any], event_type: str = "typed", **extra: Any) -> Any:
    return {
        "event_id": eid,
        "event_type": event_type,
        "schema_version": 1,
        "occurred_at": "2026-11-01T09:00:00Z",
        "properties": props,
        **extra,
    }


def collect(pack: Pack, events: list[Any], source: str = "web", at: int = AT) -> Prepared:
    """``events`` as one native request to the collector, framed (not appended)."""
    parser = Parser({pack.name: pack}, LimitSettings())
    raw = orjson.dumps(events)
    return parser.prepare(pack=pack.name, source=source, dialect="native", raw=raw, received_at=at)
