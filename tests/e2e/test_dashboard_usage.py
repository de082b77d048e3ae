"""The usage pack's dashboard in headless Chromium: an org admin sees usage and spend of their
own org (cards equal to the API's totals, stacked charts by model) and the reliability panel
with the injected burst in its spikes table; a finance user picks an org first. The layout
holds at 1366 and 375 px."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import orjson
import pytest

from gristmill.demo.process import ServerProcess, free_port
from gristmill.demo.usage import Burst, UsageConfig, generate_usage
from gristmill.runtime import Runtime
from tests.conftest import PACKS, make_settings
from tests.e2e.dashboard_checks import check_layout, shots_dir
from tests.e2e.test_dashboard import ARGS, CHROMIUM

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, dict[str, str], Burst]]:
    data = tmp_path_factory.mktemp("dash-usage") / "data"
    rt = Runtime(make_settings(data, packs=["usage_metering"]))
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    burst = Burst("org_000", "gpt-4o-mini", now - timedelta(hours=3), minutes=60)
    traffic = generate_usage(UsageConfig(events=6000, days=2, orgs=4, end=now, bursts=[burst]))
    for i in range(0, len(traffic.events), 1000):
        rt.collector.submit_sync(
            rt.collector.prepare(
                pack="usage_metering",
                source="gateway",
                dialect="native",
                raw=orjson.dumps(traffic.events[i : i + 1000]),
            )
        )
    rt.loader.drain()
    mk = rt.meta.create_key
    keys = {
        "admin": mk(
            "secret", "a", pack="usage_metering", role="org_admin", claims={"org_id": "org_000"}
        )[1],
        "finance": mk("secret", "f", pack="usage_metering", role="finance")[1],
    }
    rt.stop()
    server = ServerProcess(
        data, free_port(), packs_dir=PACKS, env={"GRISTMILL_PACKS": '["usage_metering"]'}
    )
    server.start()
    yield server, keys, burst
    server.stop()


def test_usage_dashboard_in_chromium(
    served: tuple[ServerProcess, dict[str, str], Burst], tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    server, keys, burst = served
    api = httpx.get(
        f"{server.url}/analytics/v1/orgs/org_000/usage?preset=7d",
        headers={"Authorization": f"Bearer {keys['admin']}"},
    ).json()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server.url}/ui/login")
        page.fill("#key", keys["admin"])
        page.click("button[type=submit]")
        page.wait_for_selector("section[data-view='usage'] .card")
        cards = {
            el.get_attribute("data-metric"): el.get_attribute("data-raw")
            for el in page.query_selector_all("section[data-view='usage'] .card")
        }
        assert cards == {k: str(v) for k, v in api["totals"].items()}
        assert "org_000" in (page.text_content("section[data-view='usage'] h2") or "")
        assert errors == []
        page.wait_for_selector("section[data-view='usage'] .js-plotly-plot .main-svg")
        assert page.query_selector_all("section[data-view='usage'] .js-plotly-plot .legend")
        spikes = page.text_content("section[data-view='reliability'] table.spikes") or ""
        assert burst.start.strftime("%Y-%m-%d %H:%M") in spikes
        assert "gpt-4o-mini" in spikes
        assert page.text_content("#heading") == "AI usage and spend · org_000"
        check_layout(page, shots_dir(tmp_path), "usage-admin")
        page.set_viewport_size({"width": 1366, "height": 900})

        page.click("form[action='/ui/logout'] button")
        page.goto(f"{server.url}/ui/login")
        page.fill("#key", keys["finance"])
        page.click("button[type=submit]")
        page.wait_for_selector("section[data-view='usage'] form.pick")
        page.fill("section[data-view='usage'] input[name=orgId]", "org_001")
        page.click("section[data-view='usage'] form.pick button")
        page.wait_for_selector("section[data-view='usage'] .card")
        assert "org_001" in (page.text_content("section[data-view='usage'] h2") or "")
        page.wait_for_selector("section[data-view='platform_usage'] .js-plotly-plot .main-svg")
        # The chosen organisation stays in the preset links: a shareable link keeps it.
        assert "orgId=org_001" in (page.get_attribute("a[data-preset='7d']", "href") or "")
        assert page.text_content("#heading") == "AI usage and spend · finance"
        check_layout(page, shots_dir(tmp_path), "usage-finance")
        assert errors == []
        browser.close()
