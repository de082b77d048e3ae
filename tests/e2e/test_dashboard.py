"""The dashboard in real headless Chromium (Debian's, driven by Playwright): sign in, the KPI
cards match the API, switching the preset changes them, the charts render."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from gristmill.demo.marketplace import DemoConfig, generate
from gristmill.demo.process import ServerProcess, free_port
from gristmill.runtime import Runtime
from tests.conftest import PACKS, make_settings

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    data = tmp_path_factory.mktemp("dash") / "data"
    rt = Runtime(make_settings(data))
    traffic = generate(DemoConfig(events=8000, days=40, seed=9))
    for src in ("backend", "adserver"):
        evs = [e for s, e in zip(traffic.sources, traffic.events, strict=True) if s == src]
        for i in range(0, len(evs), 500):
            rt.collector.submit_sync(
                rt.collector.prepare(
                    pack="marketplace",
                    source=src,
                    dialect="native",
                    raw=orjson.dumps(evs[i : i + 500]),
                )
            )
    rt.loader.drain()
    admin = rt.meta.create_key("secret", "admin", pack="marketplace", role="admin")[1]
    rt.stop()
    server = ServerProcess(data, free_port(), packs_dir=PACKS)
    server.start()
    yield server, admin
    server.stop()


def api_kpis(server: ServerProcess, key: str, preset: str) -> dict[str, object]:
    r = httpx.get(
        f"{server.url}/api/v1/admin/analytics?preset={preset}",
        headers={"Authorization": f"Bearer {key}"},
    )
    kpis: dict[str, object] = r.json()["kpis"]
    return kpis


def test_dashboard_in_chromium(served: tuple[ServerProcess, str], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    server, admin = served
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto(f"{server.url}/ui")
        assert page.url.endswith("/ui/login")
        page.fill("#key", "not-a-key")
        page.click("button[type=submit]")
        assert "unknown" in page.text_content("[role=alert]")  # type: ignore[operator]
        page.fill("#key", admin)
        page.click("button[type=submit]")
        page.wait_for_selector(".card")

        def cards() -> dict[str, str]:
            return {
                el.get_attribute("data-metric"): el.get_attribute("data-raw")  # type: ignore[misc]
                for el in page.query_selector_all("section[data-view] .card")
            }

        api30 = api_kpis(server, admin, "30d")
        assert cards() == {k: str(v) for k, v in api30.items()}
        page.wait_for_selector(".js-plotly-plot .main-svg")
        assert len(page.query_selector_all(".js-plotly-plot")) == 5
        assert page.query_selector("#conservation") is not None
        assert "balanced" in page.text_content("#conservation")  # type: ignore[operator]

        page.click("a[data-preset='7d']")
        page.wait_for_url("**preset=7d**")
        page.wait_for_selector(".js-plotly-plot .main-svg")
        api7 = api_kpis(server, admin, "7d")
        assert cards() == {k: str(v) for k, v in api7.items()}
        assert api7 != api30
        assert page.get_attribute("a[data-preset='7d']", "class") == "active"
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        browser.close()
