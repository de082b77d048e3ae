"""Enrichment cost at collect: the platform pack's parser with its enrichment (category,
receive time, user agent, IP, traits as of the event's time) beside the same parser without
it, on the same requests in the same run. µs per event, best of three.

Requests hold 100 events each from 2,000 users on 50 distinct user agents and 1,000 IPs
(a site sees few distinct agents: the parse is cached per string), every user registered
first so the traits lookup finds a history.

Run alone: ``python -m bench --only enrichment``.
"""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from bench.common import PACKS
from gristmill.collect.enrich import build_enrichers
from gristmill.collect.service import Parser
from gristmill.config import LimitSettings
from gristmill.meta.store import MetaStore
from gristmill.pack.loader import load_packs

BASE = datetime(2026, 11, 1, tzinfo=UTC)


def _requests(n_events: int) -> list[bytes]:
    out, batch = [], []
    for i in range(n_events):
        t = BASE + timedelta(seconds=i)
        batch.append(
            {
                "event_id": f"e{i}",
                "event_type": "project.created",
                "occurred_at": t.isoformat().replace("+00:00", "Z"),
                "user_id": f"u{i % 2000}",
                "properties": {"project_id": f"p{i}", "budget": 100, "title": "x"},
                "context": {
                    "user_agent": f"Mozilla/5.0 (Windows NT 10.0; Win64) Chrome/{100 + i % 50}.0",
                    "ip": f"81.2.{i % 250}.{1 + i % 4}",
                },
            }
        )
        if len(batch) == 100:
            out.append(orjson.dumps(batch))
            batch = []
    return out


def _per_event_us(parser: Parser, bodies: list[bytes], n: int) -> float:
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        for body in bodies:
            p = parser.prepare(pack="platform", source="web", dialect="native", raw=body)
            assert p.outcome is not None
            assert p.outcome.rejected == 0
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def run(n_events: int = 50_000) -> dict[str, Any]:
    packs = load_packs(PACKS, ["platform"])
    bodies = _requests(n_events)
    with tempfile.TemporaryDirectory() as tmp:
        meta = MetaStore(f"sqlite:///{Path(tmp) / 'meta.sqlite'}")
        try:
            enrichers = build_enrichers(packs, meta.traits)
            plain = Parser(packs, LimitSettings())
            enriched = Parser(packs, LimitSettings(), enrichers=enrichers)
            regs = [
                {
                    "event_id": f"r{u}",
                    "event_type": "user.registered",
                    "occurred_at": "2026-10-01T00:00:00Z",
                    "user_id": f"u{u}",
                    "properties": {"account_type": "client"},
                }
                for u in range(2000)
            ]
            enriched.prepare(
                pack="platform", source="web", dialect="native", raw=orjson.dumps(regs)
            )
            meta.traits.flush()
            without = _per_event_us(plain, bodies, n_events)
            with_ = _per_event_us(enriched, bodies, n_events)
        finally:
            meta.close()
    return {
        "events": n_events,
        "us_per_event_without": round(without, 2),
        "us_per_event_with": round(with_, 2),
        "enrichment_us_per_event": round(with_ - without, 2),
    }


def render(results: dict[str, Any]) -> str:
    r = results["enrichment"]
    return "\n".join(
        [
            f"Run {results['when']} on {results['machine']['cores']} cores.",
            "",
            "| collector work per event (parse, validate, promote, frame) | µs/event |",
            "|---|---|",
            f"| platform pack without enrichment | {r['us_per_event_without']} |",
            f"| with enrichment (category, received, device, geo, traits as of event time) | "
            f"{r['us_per_event_with']} (+{r['enrichment_us_per_event']}) |",
            "",
            f"{r['events']:,} events in 100-event requests, 2,000 users, 50 user agents, "
            "1,000 IPs; best of three.",
        ]
    )
