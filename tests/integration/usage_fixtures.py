"""Shared by the usage-pack tests: traffic with bursts, late and duplicate deliveries loaded
into a runtime, and the independent computations the answers are checked against (plain
Python over the events sent and plain Decimal arithmetic over prices.yaml)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import orjson
import yaml

from gristmill.demo.usage import Burst, UsageConfig, UsageTraffic, generate_usage
from gristmill.runtime import Runtime
from tests.conftest import PACKS, make_settings

END = datetime(2026, 11, 30, tzinfo=UTC)
BURSTS = [
    Burst("org_000", "gpt-4o-mini", datetime(2026, 11, 27, 14, tzinfo=UTC), minutes=60),
    Burst("org_001", "claude-3-5-sonnet", datetime(2026, 11, 28, 9, tzinfo=UTC), minutes=60),
]
BOOK = yaml.safe_load((PACKS / "usage_metering" / "prices.yaml").read_text())


def traffic(events: int = 24_000) -> UsageTraffic:
    return generate_usage(UsageConfig(events=events, days=7, orgs=6, end=END, bursts=BURSTS))


def send(
    rt: Runtime, events: list[dict[str, Any]], source: str = "http", batch: int = 2000
) -> None:
    for i in range(0, len(events), batch):
        p = rt.collector.prepare(
            pack="usage_metering",
            source=source,
            dialect="native",
            raw=orjson.dumps(events[i : i + batch]),
        )
        rt.collector.submit_sync(p)
    rt.loader.drain()


@contextmanager
def loaded_runtime(
    tmp: Path, warehouse: dict[str, Any] | None = None, packs_dir: Path | None = None
) -> Iterator[tuple[Runtime, UsageTraffic]]:
    """The traffic loaded in three goes: most of it, then late events (older than what was
    loaded, over buckets already rolled up), then re-deliveries from another source."""
    extra: dict[str, Any] = {} if warehouse is None else {"warehouse": warehouse}
    if packs_dir is not None:
        extra["packs_dir"] = packs_dir
    rt = Runtime(make_settings(tmp, packs=["usage_metering"], **extra))
    t = traffic()
    late = [e for i, e in enumerate(t.distinct) if i % 9 == 0]
    late_ids = {e["event_id"] for e in late}
    first = [e for e in t.events if e["event_id"] not in late_ids]
    try:
        send(rt, first)
        send(rt, late, source="replay")
        send(rt, t.distinct[::50], source="rabbitmq")  # duplicates across paths: dropped
        yield rt, t
    finally:
        rt.stop()


def spend_micros(
    props: dict[str, Any], occurred_at: str, book: dict[str, Any] | None = None
) -> int | None:
    """Spend from prices.yaml with plain Decimal arithmetic (the oracle)."""
    book = BOOK if book is None else book
    day = datetime.fromisoformat(occurred_at.replace("Z", "+00:00")).astimezone(UTC).date()
    best: dict[str, Any] | None = None
    for e in book["entries"]:
        m = e["match"]
        eff = e["effective_from"]
        eff = eff if isinstance(eff, date) else date.fromisoformat(eff)
        same = (m["provider"], m["model"]) == (props["provider"], props["model"])
        if same and eff <= day and (best is None or eff > best["eff"]):
            best = {"eff": eff, "prices": e["prices"]}
    if best is None:
        return None
    prices = {k: Decimal(v) for k, v in best["prices"].items()}
    cached = props.get("cached_tokens") or 0
    use = {"input": props["tokens_in"] - cached, "output": props["tokens_out"], "cached": cached}
    total = Decimal(0)
    for k, n in use.items():
        if n:
            if k not in prices:
                return None
            total += Decimal(n) * prices[k]
    micros = total * Decimal(1_000_000) / Decimal(book["per_units"])
    return int(micros.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def expected_usage(
    events: list[dict[str, Any]],
    org: str,
    start: datetime,
    end: datetime,
    grain: str,
    book: dict[str, Any] | None = None,
) -> dict[tuple[str, str], dict[str, int]]:
    """(bucket label, model) -> sums, from the distinct events of ``org`` in the range."""
    out: dict[tuple[str, str], dict[str, int]] = defaultdict(
        lambda: {"requests": 0, "tokens_in": 0, "tokens_out": 0, "spend_micros": 0, "unpriced": 0}
    )
    for e in events:
        p = e["properties"]
        t = datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00"))
        if p["org_id"] != org or not start <= t < end:
            continue
        if grain == "day":
            label = t.astimezone(UTC).date().isoformat()
        else:
            label = t.astimezone(UTC).replace(minute=0, second=0, microsecond=0).isoformat()
        row = out[(label, p["model"])]
        row["requests"] += 1
        row["tokens_in"] += p["tokens_in"]
        row["tokens_out"] += p["tokens_out"]
        s = spend_micros(p, e["occurred_at"], book)
        if s is None:
            row["unpriced"] += 1
        else:
            row["spend_micros"] += s
    return out
