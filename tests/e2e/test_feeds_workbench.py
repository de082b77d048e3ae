"""The data-feeds workbench in real headless Chromium: drop a file, see the preview with
badges and unmatched products, create them, commit, watch the status reach ``transformed``,
see the KPI cards change to the figures of the file."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gristmill.demo.process import ServerProcess, free_port
from gristmill.runtime import Runtime
from tests.conftest import PACKS, make_settings
from tests.e2e.test_dashboard import ARGS, CHROMIUM

pytestmark = pytest.mark.browser

ENV = {"GRISTMILL_PACKS": '["sales_feeds"]'}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    data = tmp_path / "data"
    rt = Runtime(make_settings(data, packs=["sales_feeds"]))
    rt.feeds.create_products("1", [{"name": "Latte", "cost_price": "1.20"}])
    owner = rt.meta.create_key(
        "secret", "owner", pack="sales_feeds", role="owner", claims={"business_id": "1"}
    )[1]
    rt.stop()
    server = ServerProcess(data, free_port(), packs_dir=PACKS, env=ENV)
    server.start()
    yield server, owner
    server.stop()


def sales_csv() -> str:
    today = datetime.now(UTC).date()
    yday = today - timedelta(days=1)
    return (
        "Date;Product;Qty;Unit Price\r\n"
        f"{today:%d.%m.%Y};Latte;2;3,50\r\n"  # 7.00
        f"{today:%d.%m.%Y};Cold Brew;1;4,25\r\n"  # 4.25, product unknown at first
        f"{yday:%d.%m.%Y};Bagel;3;2,10\r\n"  # 6.30, product unknown at first
        "31.02.2025;Latte;1;1,00\r\n"  # invalid date
    )


def test_workbench_in_chromium(served: tuple[ServerProcess, str], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    server, owner = served
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto(f"{server.url}/ui/login")
        page.fill("#key", owner)
        page.click("button[type=submit]")
        page.wait_for_url("**/ui")
        page.goto(f"{server.url}/ui/data-feeds?poll_ms=300")
        sales = "#kpis .card[data-kpi=total_sales]"
        page.wait_for_function(f"document.querySelector('{sales}').dataset.raw !== ''")
        assert page.get_attribute(sales, "data-raw") == "0"

        drop = page.evaluate_handle(
            """(text) => { const dt = new DataTransfer();
                 dt.items.add(new File([text], 'sales.csv', {type: 'text/csv'})); return dt; }""",
            sales_csv(),
        )
        page.dispatch_event("#dropzone", "drop", {"dataTransfer": drop})
        page.wait_for_selector("#preview tbody tr")
        rows = page.query_selector_all("#preview tbody tr")
        assert len(rows) == 4
        assert [r.get_attribute("data-valid") for r in rows] == ["true", "true", "true", "false"]
        assert len(page.query_selector_all("#preview .badge.invalid")) == 1
        assert len(page.query_selector_all("#preview tr.unmatched")) == 2
        assert "Cold Brew, Bagel" in (page.text_content("#candidates") or "")
        assert page.get_attribute("#upload-progress", "value") == "100"

        page.uncheck("#auto-create")
        page.click("#create-missing")
        page.wait_for_function("document.querySelectorAll('#preview tr.unmatched').length === 0")
        assert page.is_disabled("#create-missing")

        page.check("#allow-invalid")
        page.click("#commit")
        page.wait_for_selector("#feed-status[data-status=transformed]", timeout=30_000)
        page.wait_for_function(f"document.querySelector('{sales}').dataset.raw === '17.55'")
        cards = {
            el.get_attribute("data-kpi"): el.get_attribute("data-raw")
            for el in page.query_selector_all("#kpis .card")
        }
        # 7.00 + 4.25 + 6.30 = 17.55; COGS 2 x 1.20 = 2.40; margin 15.15 = 86.32 %
        assert cards == {
            "total_sales": "17.55",
            "cogs": "2.4",
            "gross_margin": "15.15",
            "gross_margin_percent": "86.32",
            "average_order_value": "5.85",
            "orders": "3",
        }
        page.wait_for_selector("#trend-chart .main-svg")
        page.wait_for_selector("#top-chart .main-svg")
        page.wait_for_selector("#history tbody tr")
        assert "transformed" in (page.text_content("#history tbody tr") or "")
        page.screenshot(path=str(tmp_path / "workbench.png"), full_page=True)
        browser.close()
