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
        assert page.is_visible("#no-data")  # no empty axes before there is any data
        assert page.is_hidden("#charts")

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


HONEST = Path(__file__).resolve().parents[1] / "fixtures" / "feeds" / "honest"


@pytest.fixture
def loaded(tmp_path: Path) -> Iterator[tuple[ServerProcess, str]]:
    """A business whose sales (March 2025, ending in a total line) are already loaded."""
    data = tmp_path / "data"
    rt = Runtime(make_settings(data, packs=["sales_feeds"]))
    svc = rt.feeds
    with (HONEST / "summary_sum_amount.csv").open("rb") as fh:
        up = svc.save_upload("1", "sales_feeds", "sales", "march.csv", fh)
    res = svc.commit(up, auto_create_products=True, queue=False)
    assert res.summary_rows == 1
    assert svc.transformer.run(res.feed_id) == "transformed"
    owner = rt.meta.create_key(
        "secret", "owner", pack="sales_feeds", role="owner", claims={"business_id": "1"}
    )[1]
    rt.stop()
    server = ServerProcess(data, free_port(), packs_dir=PACKS, env=ENV)
    server.start()
    yield server, owner
    server.stop()


def test_range_picker_and_no_data(loaded: tuple[ServerProcess, str], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    server, owner = loaded
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto(f"{server.url}/ui/login")
        page.fill("#key", owner)
        page.click("button[type=submit]")
        page.wait_for_url("**/ui")
        page.goto(f"{server.url}/ui/data-feeds")
        sales = "#kpis .card[data-kpi=total_sales]"
        page.wait_for_function(f"document.querySelector('{sales}').dataset.raw !== ''")
        # Default: the days the data covers, although they are long past "last 30 days".
        assert page.input_value("#range") == "custom"
        assert page.input_value("#range-start") == "2025-03-01"
        assert page.input_value("#range-end") == "2025-03-02"
        # 2 x 3.50 + 4.00 + 3 x 3.50 + 4 x 2.00 = 29.50 (the total line is not a sale)
        assert page.get_attribute(sales, "data-raw") == "29.5"
        page.wait_for_selector("#trend-chart .main-svg")
        assert page.is_hidden("#no-data")

        page.fill("#range-start", "2001-01-01")
        page.fill("#range-end", "2001-01-31")
        page.dispatch_event("#range-end", "change")
        page.wait_for_selector("#no-data", state="visible")
        page.wait_for_function(f"document.querySelector('{sales}').dataset.raw === '0'")
        assert page.is_hidden("#charts")
        assert page.text_content("#no-data") == "No data in this range."
        assert page.query_selector("#trend-chart .main-svg") is None

        page.fill("#range-start", "2025-03-02")
        page.fill("#range-end", "2025-03-02")
        page.dispatch_event("#range-end", "change")
        # 3 x 3.50 + 4 x 2.00 = 18.50
        page.wait_for_function(f"document.querySelector('{sales}').dataset.raw === '18.5'")
        page.wait_for_selector("#trend-chart .main-svg")
        assert page.is_hidden("#no-data")

        # An ambiguous file asks which order before it can be committed.
        drop = page.evaluate_handle(
            """(text) => { const dt = new DataTransfer();
                 dt.items.add(new File([text], 'a.csv', {type: 'text/csv'})); return dt; }""",
            (HONEST / "ambiguous_dates.csv").read_text(),
        )
        page.dispatch_event("#dropzone", "drop", {"dataTransfer": drop})
        page.wait_for_selector("#date-choice", state="visible")
        assert page.is_disabled("#commit")
        assert "2025-04-03" in (page.text_content("#reading-day_first") or "")
        assert "2025-03-04" in (page.text_content("#reading-month_first") or "")
        page.check("#date-choice input[value=month_first]")
        page.wait_for_function("!document.getElementById('commit').disabled")
        cells = page.query_selector_all("#preview tbody tr td:nth-child(3)")
        assert [c.text_content() for c in cells] == ["2025-03-04", "2025-05-06", "2025-07-08"]
        page.screenshot(path=str(tmp_path / "range.png"), full_page=True)
        browser.close()
