"""The marketplace dashboard in real headless Chromium (Debian's, driven by Playwright): sign
in, the cards match the API, presets, a custom range and zone kept in the URL, auto-refresh
paused while the tab is hidden, the ad view, money rounded by one rule (checked against an
independent Decimal sum of the raw events), and the layout at 1366 and 375 px."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from gristmill.demo.marketplace import DemoConfig, generate
from gristmill.demo.process import ServerProcess, free_port
from gristmill.runtime import Runtime
from tests.conftest import PACKS, make_settings
from tests.e2e.dashboard_checks import check_layout, shots_dir

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
VENDOR = "vnd_000"


@dataclass
class Served:
    server: ServerProcess
    keys: dict[str, str]
    events: list[dict[str, Any]]
    valid: set[tuple[str, str]]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
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
    # Two events for the quarantine browser: bytes that are not UTF-8, and an unknown type.
    for raw in (
        b'{"event_type":"order_created","x":"\xff\xfe"}',
        orjson.dumps([{**traffic.events[0], "event_id": "q-unknown", "event_type": "nope"}]),
    ):
        rt.collector.submit_sync(
            rt.collector.prepare(pack="marketplace", source="qa", dialect="native", raw=raw)
        )
    rt.loader.drain()
    mk = rt.meta.create_key
    keys = {
        "admin": mk("secret", "admin", pack="marketplace", role="admin")[1],
        "vendor": mk("secret", "v", pack="marketplace", role="vendor", claims={"store_id": VENDOR})[
            1
        ],
        "operator": mk("secret", "op", role="operator")[1],
    }
    rt.stop()
    server = ServerProcess(data, free_port(), packs_dir=PACKS)
    server.start()
    yield Served(server, keys, traffic.events, traffic.valid_ids)
    server.stop()


def api(s: Served, who: str, route: str, **params: str) -> dict[str, Any]:
    r = httpx.get(
        f"{s.server.url}{route}", params=params, headers={"Authorization": f"Bearer {s.keys[who]}"}
    )
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def cards(page: Any, view: str) -> dict[str, str]:
    return {
        el.get_attribute("data-metric"): el.get_attribute("data-raw")
        for el in page.query_selector_all(f"section[data-view='{view}'] .card")
    }


def texts(page: Any, view: str) -> dict[str, str]:
    return {
        el.get_attribute("data-metric"): el.eval_on_selector(".value", "e => e.textContent").strip()
        for el in page.query_selector_all(f"section[data-view='{view}'] .card")
    }


def sign_in(page: Any, s: Served, who: str) -> None:
    page.on("pageerror", lambda e: pytest.fail(f"script error on the page: {e}"))
    page.goto(f"{s.server.url}/ui/login")
    page.fill("#key", s.keys[who])
    page.click("button[type=submit]")
    page.wait_for_selector(".card")


def test_admin_dashboard(served: Served, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    s = served
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.goto(f"{s.server.url}/ui")
        assert page.url.endswith("/ui/login")
        page.fill("#key", "not-a-key")
        page.click("button[type=submit]")
        assert "unknown" in page.text_content("[role=alert]")  # type: ignore[operator]
        sign_in(page, s, "admin")

        api30 = api(s, "admin", "/api/v1/admin/analytics", preset="30d")
        ads30 = api(s, "admin", "/api/v1/ads/analytics", preset="30d")
        assert cards(page, "admin_analytics") == {k: str(v) for k, v in api30["kpis"].items()}
        assert cards(page, "ad_analytics") == {k: str(v) for k, v in ads30["kpis"].items()}
        assert ads30["kpis"]["ad_impressions"] > 0
        page.wait_for_selector(".js-plotly-plot .main-svg")
        assert len(page.query_selector_all(".js-plotly-plot")) == 5 + 3
        assert page.text_content("#heading") == "B2B marketplace analytics · admin"
        assert page.text_content("section[data-view='admin_analytics'] h2") == "Marketplace"
        assert "balanced" in page.text_content("#conservation")  # type: ignore[operator]
        assert page.query_selector("#quarantine") is None  # admin lacks quarantine:read

        # A count and an amount of the same thing never share a label; titles are words.
        labels = page.eval_on_selector_all(
            "section[data-view='admin_analytics'] .card .label",
            "els => els.map(e => e.textContent)",
        )
        assert len(set(labels)) == len(labels)
        assert "Payouts completed · count" in labels
        assert "Payouts completed · amount" in labels
        titles = page.eval_on_selector_all(
            ".js-plotly-plot .gtitle", "els => els.map(e => e.textContent)"
        )
        assert "GMV per day" in titles
        assert "Ad spend per day" in titles
        assert not any("_" in t for t in titles)
        # Money tiles are the API's exact value, half-up to the cent.
        for name, value in api30["kpis"].items():
            if name.endswith("_cents"):
                got = texts(page, "admin_analytics")[name]
                assert got == dollars(Decimal(value) / 100), name
        assert_ticks_distinct(page)

        page.click("a[data-preset='7d']")
        page.wait_for_url("**preset=7d**")
        page.wait_for_selector(".js-plotly-plot .main-svg")
        api7 = api(s, "admin", "/api/v1/admin/analytics", preset="7d")
        assert cards(page, "admin_analytics") == {k: str(v) for k, v in api7["kpis"].items()}
        assert api7["kpis"] != api30["kpis"]
        assert page.get_attribute("a[data-preset='7d']", "class") == "active"
        check_layout(page, shots_dir(tmp_path), "admin")
        browser.close()


def test_range_zone_and_refresh(served: Served) -> None:
    """A custom range and a zone are kept in the URL (the link opens the same numbers);
    auto-refresh runs only while the tab is visible and the toggle is on."""
    from playwright.sync_api import sync_playwright

    s = served
    ny = ZoneInfo("America/New_York")
    today = datetime.now(ny).date()
    first, last = today - timedelta(days=20), today - timedelta(days=10)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        sign_in(page, s, "admin")
        page.fill("#start", first.isoformat())
        page.fill("#end", last.isoformat())
        page.select_option("#tz", "America/New_York")
        page.click("#range button[type=submit]")
        page.wait_for_url("**start=**")
        q = parse_qs(urlparse(page.url).query)
        assert q["start"] == [first.isoformat()]
        assert q["end"] == [last.isoformat()]
        assert q["tz"] == ["America/New_York"]
        start = datetime(first.year, first.month, first.day, tzinfo=ny)
        end = datetime(last.year, last.month, last.day, tzinfo=ny) + timedelta(days=1)
        want = api(
            s,
            "admin",
            "/api/v1/admin/analytics",
            start=start.isoformat(),
            end=end.isoformat(),
            tz="America/New_York",
        )
        assert cards(page, "admin_analytics") == {k: str(v) for k, v in want["kpis"].items()}
        assert "America/New_York" in page.text_content(  # type: ignore[operator]
            "section[data-view='admin_analytics'] .range"
        )
        # The shared link, opened fresh, shows the same numbers.
        other = browser.new_page()
        other.context.add_cookies(page.context.cookies())
        other.goto(page.url)
        assert cards(other, "admin_analytics") == cards(page, "admin_analytics")
        # Preset links keep the zone.
        assert "tz=America%2FNew_York" in (page.get_attribute("a[data-preset='7d']", "href") or "")

        assert re.fullmatch(r"updated \d\d:\d\d:\d\d", page.text_content("#updated") or "")
        assert page.evaluate("window.gristmill.timer !== null")
        page.evaluate(
            """() => { Object.defineProperty(document, 'visibilityState',
                         {configurable: true, get: () => 'hidden'});
                       document.dispatchEvent(new Event('visibilitychange')); }"""
        )
        assert page.evaluate("window.gristmill.timer") is None
        before = page.evaluate("window.gristmill.refreshes")
        page.evaluate(
            """() => { Object.defineProperty(document, 'visibilityState',
                         {configurable: true, get: () => 'visible'});
                       document.dispatchEvent(new Event('visibilitychange')); }"""
        )
        page.wait_for_function(f"window.gristmill.refreshes > {before}")
        assert page.evaluate("window.gristmill.timer !== null")
        assert cards(page, "admin_analytics") == {k: str(v) for k, v in want["kpis"].items()}
        page.wait_for_selector(".js-plotly-plot .main-svg")
        page.uncheck("#autorefresh")
        assert page.evaluate("window.gristmill.timer") is None
        browser.close()


def test_vendor_dashboard_and_money_rule(served: Served, tmp_path: Path) -> None:
    """The vendor's AOV card equals GMV / orders of the raw events, as an exact Decimal
    rounded half-up to the cent; the vendor never sees the quarantine, not even by URL."""
    from playwright.sync_api import sync_playwright

    s = served
    body = api(s, "vendor", "/api/v1/vendor/analytics", preset="30d")
    lo = datetime.fromisoformat(body["range"]["start"])
    hi = datetime.fromisoformat(body["range"]["end"])
    seen: set[str] = set()
    amounts: list[int] = []
    for e in s.events:  # the demo's valid events, each once (it re-sends and breaks some)
        if ("backend", e.get("event_id")) not in s.valid or e["event_id"] in seen:
            continue
        seen.add(e["event_id"])
        p = e["properties"]
        at = datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00")).astimezone(UTC)
        if e["event_type"] == "order_created" and p["vendor_store_id"] == VENDOR and lo <= at < hi:
            amounts.append(int(p["amount_cents"]))
    assert amounts
    gmv = Decimal(sum(amounts)) / 100
    aov = Decimal(sum(amounts)) / len(amounts) / 100
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        sign_in(page, s, "vendor")
        shown = texts(page, "vendor_analytics")
        assert shown["aov_cents"] == dollars(aov)
        assert shown["gmv_cents"] == dollars(gmv)
        assert shown["orders"] == f"{len(amounts):,}"
        assert page.text_content("section[data-view='vendor_analytics'] h2") == "Your store"
        assert page.text_content("#heading") == f"B2B marketplace analytics · {VENDOR}"
        assert cards(page, "ad_analytics")  # a vendor sees its own ads
        # No quarantine anywhere for a vendor: not on the page, not through the API.
        assert page.query_selector("#quarantine") is None
        assert page.query_selector("#conservation") is None
        assert page.request.get(f"{s.server.url}/v1/quarantine").status == 403
        r = page.request.post(
            f"{s.server.url}/ui/quarantine/whatever/replay", headers={"X-Gristmill-UI": "1"}
        )
        assert r.status == 403
        # A custom range: the ad view takes it, the vendor view keeps its preset and says so.
        page.goto(f"{s.server.url}/ui?start={lo.date()}&end={lo.date() + timedelta(days=6)}")
        note = page.text_content("section[data-view='vendor_analytics'] .range") or ""
        assert "presets only" in note
        ad_range = page.text_content("section[data-view='ad_analytics'] .range") or ""
        assert ad_range.startswith(f"{lo.date()} 00:00")
        ctr = api(s, "vendor", "/api/v1/ads/analytics", preset="30d")["kpis"]["ctr"]
        page.goto(f"{s.server.url}/ui")
        want_ctr = (Decimal(str(ctr)) * 100).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        assert texts(page, "ad_analytics")["ctr"] == f"{want_ctr}%"
        check_layout(page, shots_dir(tmp_path), "vendor")
        browser.close()


def test_operator_quarantine_browser(served: Served, tmp_path: Path) -> None:
    """Filter by reason and source, see the original bytes (hex when not UTF-8), replay one."""
    from playwright.sync_api import sync_playwright

    s = served
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        sign_in(page, s, "operator")
        assert page.text_content("#heading") == "Operations · B2B marketplace analytics"
        h2s = page.eval_on_selector_all(
            "section[data-view] h2", "els => els.map(e => e.textContent)"
        )
        assert "Your store" not in h2s
        assert "Vendor analytics (vendor view, every tenant)" in h2s
        page.wait_for_selector("#q-list tbody tr")
        page.select_option("#q-reason", "undecodable")
        page.fill("#q-source", "qa")
        page.click("#q-filter button[type=submit]")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#q-list tbody tr')]"
            ".every(tr => tr.cells[2].textContent === 'undecodable')"
        )
        rows = page.query_selector_all("#q-list tbody tr")
        assert len(rows) == 1
        rows[0].query_selector("button.q-show").click()  # type: ignore[union-attr]
        page.wait_for_selector("#q-raw[data-encoding='base64']")
        raw = page.text_content("#q-raw") or ""
        assert "ff fe" in raw
        assert '|{"event_type":' in raw

        page.select_option("#q-reason", "unknown_event_type")
        page.click("#q-filter button[type=submit]")
        page.wait_for_function(
            "() => document.querySelector('#q-list tbody tr')?.cells[2].textContent"
            " === 'unknown_event_type'"
        )
        page.click("#q-list tbody tr button.q-show")
        page.wait_for_selector("#q-raw[data-encoding='utf-8']")
        assert '"event_type":"nope"' in (page.text_content("#q-raw") or "")
        page.click("#q-replay")
        page.wait_for_function("document.querySelector('#q-result').textContent !== ''")
        assert (page.text_content("#q-result") or "").startswith("replayed 1")
        # Replay without the dashboard's header (what a forged cross-site form would send).
        qid = page.get_attribute("#q-detail", "data-id")
        r = page.request.post(f"{s.server.url}/ui/quarantine/{qid}/replay")
        assert r.status == 403

        stats = api(s, "operator", "/v1/pipeline/stats")
        if any("quarantine_rate" in x for x in stats["sources"]):
            assert page.query_selector("#source-rates tr[data-source='backend']") is not None
        else:
            assert page.query_selector("#source-rates") is None
        check_layout(page, shots_dir(tmp_path), "operator")
        browser.close()


def dollars(amount: Decimal) -> str:
    """The money rule, written again independently of ui_format: half-up to the cent."""
    cents = amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
    return f"${cents:,.2f}"


def assert_ticks_distinct(page: Any) -> None:
    for chart in page.query_selector_all(".js-plotly-plot"):
        ticks = chart.eval_on_selector_all(".ytick text", "els => els.map(e => e.textContent)")
        assert len(ticks) == len(set(ticks)), ticks
