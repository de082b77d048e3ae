"""Helpers of the observability tests: a pack folder with an edited ``pack.yaml``, events that
happened just now, and Prometheus text parsed into samples."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PACKS, ROOT
from tests.factories import ad, order

RULES = ROOT / "deploy" / "prometheus" / "gristmill-rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "tests"
ALERTMANAGER = ROOT / "deploy" / "prometheus" / "alertmanager.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "gristmill.json"
OPERATIONS = ROOT / "docs" / "operations.md"


def packs_with(tmp: Path, pack: str = "marketplace", **fields: Any) -> Path:
    """A packs folder holding a copy of ``pack`` whose top-level fields are replaced
    (``None`` removes one); the schemas are copied as they are."""
    root = tmp / "packs"
    shutil.copytree(PACKS / pack, root / pack, dirs_exist_ok=True)
    path = root / pack / "pack.yaml"
    doc = yaml.safe_load(path.read_text())
    for key, value in fields.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return root


def just_now(seconds_ago: float = 5.0) -> str:
    t = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return t.isoformat().replace("+00:00", "Z")


def recent_orders(
    amounts: list[int], vendor: str = "v1", occurred_at: str | None = None, **kw: Any
) -> list[dict[str, Any]]:
    return [
        order(vendor=vendor, amount=a, occurred_at=occurred_at or just_now(), **kw) for a in amounts
    ]


def recent_ads(n: int, event_type: str = "ad_impression", cost: int = 3) -> list[dict[str, Any]]:
    return [ad(event_type, cost=cost, occurred_at=just_now()) for _ in range(n)]


@dataclass(frozen=True)
class Sample:
    name: str
    labels: dict[str, str]
    value: float


def samples(text: str) -> Iterator[Sample]:
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            yield Sample(s.name, dict(s.labels), float(s.value))


def sample_names(text: str) -> set[str]:
    """Every sample name in an exposition (``…_total``, ``…_bucket`` included)."""
    return {s.name for s in samples(text)}


def find(text: str, name: str, **labels: str) -> list[Sample]:
    return [
        s
        for s in samples(text)
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
