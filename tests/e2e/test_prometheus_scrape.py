"""The real Prometheus (Debian's binary) scrapes a real ``gristmill serve`` every second with
deploy/prometheus/gristmill-rules.yml loaded: every rule evaluates without error on the real
series, the error-ratio recording rule equals errors / requests of the events sent, and the
stale-table alert's expression names exactly the table that received them (budget 1 s).

The marketplace pack stands in for a pack that publishes ``requests`` and ``errors``: its
ad impressions and clicks are published under those names here, which is all the shared rules
need. Waits are bounded; nothing asserts on timing.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from gristmill.demo.process import ServerProcess, free_port
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.procs import stop_group
from tests.prom import RULES, packs_with, recent_ads

pytestmark = pytest.mark.prometheus

IMPRESSIONS, CLICKS = 40, 6
WAIT_S = 90.0


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float = WAIT_S) -> Any:
    """``probe()`` until it returns something truthy (bounded); its last answer on failure."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except httpx.TransportError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.25)
    raise AssertionError(f"gave up waiting for {what}; last answer: {last!r}")


@pytest.fixture
def gristmill(tmp_path: Path) -> Iterator[ServerProcess]:
    packs = packs_with(
        tmp_path,
        observe={
            "window": "1h",
            "group_by": ["event_type"],
            "metrics": {"requests": "ad_impressions", "errors": "ad_clicks"},
            "cache_s": 1,
        },
        freshness_budget="1s",
    )
    data = tmp_path / "data"
    rt = Runtime(make_settings(data, packs_dir=packs))
    key = rt.meta.create_key("write", "ads", pack="marketplace", source="adserver")[1]
    rt.stop()
    server = ServerProcess(data, free_port(), packs_dir=packs)
    server.start()
    try:
        events = recent_ads(IMPRESSIONS) + recent_ads(CLICKS, "ad_click")
        r = httpx.post(
            f"{server.url}/v1/events",
            content=orjson.dumps(events),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
            timeout=30,
        )
        assert r.status_code == 200, r.text
        yield server
    except BaseException:
        print(server.tail())
        raise
    finally:
        server.stop()


@pytest.fixture
def prometheus(tmp_path: Path, gristmill: ServerProcess) -> Iterator[str]:
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {
                        "job_name": "gristmill",
                        "static_configs": [{"targets": [f"127.0.0.1:{gristmill.port}"]}],
                    }
                ],
            }
        )
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("prometheus ready", lambda: httpx.get(f"{url}/-/ready", timeout=2).is_success)
        yield url
    except BaseException:
        print((tmp_path / "prometheus.log").read_text(errors="replace")[-4000:])
        raise
    finally:
        stop_group(proc, 30)
        log.close()


def query(url: str, promql: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=10)
    body = r.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def rules_by_name() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return {r.get("alert") or r["record"]: r for g in doc["groups"] for r in g["rules"]}


def test_prometheus_scrapes_gristmill_and_evaluates_the_rules(prometheus: str) -> None:
    url = prometheus
    rules = rules_by_name()
    ratio = wait_for(
        "the error-ratio recording rule over scraped series",
        lambda: query(url, "gristmill:pack_error_ratio"),
    )
    assert [r["metric"] for r in ratio] == [
        {"__name__": "gristmill:pack_error_ratio", "pack": "marketplace"}
    ]
    assert float(ratio[0]["value"][1]) == pytest.approx(CLICKS / IMPRESSIONS)
    # The rule's own expression, evaluated ad hoc, gives the same answer.
    (again,) = query(url, rules["gristmill:pack_error_ratio"]["expr"])
    assert float(again["value"][1]) == pytest.approx(CLICKS / IMPRESSIONS)

    stale = wait_for(
        "the stale-table expression over a 1 s budget",
        lambda: query(url, rules["GristmillTableStale"]["expr"]),
    )
    assert [(r["metric"]["pack"], r["metric"]["table"]) for r in stale] == [
        ("marketplace", "ad_events")
    ]
    assert float(stale[0]["value"][1]) > 1.0
    (wm,) = query(url, "gristmill_freshness_watermark_lag_seconds")
    assert wm["metric"]["pack"] == "marketplace"

    def pending() -> list[dict[str, Any]]:
        got = httpx.get(f"{url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return [a for a in got if a["labels"]["alertname"] == "GristmillTableStale"]

    (alert,) = wait_for("GristmillTableStale pending", pending)
    assert alert["state"] in ("pending", "firing")
    assert alert["labels"]["table"] == "ad_events"

    groups = httpx.get(f"{url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    health = {r["name"]: (r["health"], r.get("lastError", "")) for g in groups for r in g["rules"]}
    assert set(health) == set(rules)
    assert {name: h for name, h in health.items() if h[0] != "ok"} == {}
