"""CSV feeds that never load a wrong number (issue 15, item 1), through the real API with
DuckDB: one small fixture per class in ``tests/fixtures/feeds/honest/``.

Expected figures are worked out by hand from the fixture rows (written next to each
assertion) and KPIs are compared with plain ``Decimal`` arithmetic over those rows.
"""

from __future__ import annotations

import io
import struct
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from openpyxl import Workbook

from tests.integration.feeds_fixtures import FIXTURES, Feeds, feeds_fixture  # noqa: F401
from tests.integration.test_feeds_api import fact_rows, staged
from tests.integration.test_feeds_fastlane import both

HONEST = FIXTURES / "honest"


def read(name: str) -> bytes:
    return (HONEST / name).read_bytes()


def load(f: Feeds, name: str, content: bytes, *, expect: int = 202, **body: Any) -> dict[str, Any]:
    """Preview then commit (auto-create on), and wait for the transform."""
    p = f.preview("b1", name, content)
    assert p.status_code == 200, p.text
    r = f.commit("b1", p.json()["upload_token"], auto_create_products=True, **body)
    assert r.status_code == expect, r.text
    out: dict[str, Any] = r.json()
    if expect == 202:
        done = f.wait("b1", out["feed_id"])
        assert done["status"] == "transformed", done
        out["done"] = done
    return out


def kpi_sales(f: Feeds, start: str, end: str) -> Decimal:
    r = f.client.get(
        f"/dashboard/metrics/kpi?range=custom&start={start}&end={end}", headers=f.h("b1")
    )
    assert r.status_code == 200, r.text
    return Decimal(r.json()["kpis"]["cents"]["sales_cents"]) / 100


def lines_of(facts: list[dict[str, Any]]) -> list[int]:
    """File lines of fact rows (their event id is ``feed-<feed>-<line>``)."""
    return [int(str(r["event_id"]).rsplit("-", 1)[1]) for r in facts]


def rejects(f: Feeds, feed_id: int) -> dict[int, list[str]]:
    r = f.client.get(f"/dashboard/data-feeds/{feed_id}/rejects", headers=f.h("b1"))
    return {x["line"]: x["reasons"] for x in r.json()["rejects"]}


# -- 1. summary rows ---------------------------------------------------------------------------
def test_summary_words_rejected_with_their_own_reason(feeds: Feeds) -> None:
    p = feeds.preview("b1", "w.csv", read("summary_words.csv")).json()
    flagged = [r["line"] for r in p["rows"] if r.get("summary_row")]
    assert flagged == [4, 6, 7, 8, 9]
    assert p["summary"]["summary_rows"] == 5
    assert all(r["issues"][0].startswith("summary_row:") for r in p["rows"] if r.get("summary_row"))
    assert p["summary"]["new_product_candidates"] == ["Latte", "Mocha"]  # no "Latte Total"
    # No allow_invalid needed: total lines are not invalid data, just not sales.
    out = load(feeds, "w.csv", read("summary_words.csv"))
    assert (out["rows_in"], out["record_count"], out["rejected"], out["summary_rows"]) == (
        8,
        3,
        5,
        5,
    )
    assert sorted(rejects(feeds, out["feed_id"])) == [4, 6, 7, 8, 9]
    assert all(r[0].startswith("summary_row:") for r in rejects(feeds, out["feed_id"]).values())
    want = 2 * Decimal("3.50") + 1 * Decimal("3.50") + 1 * Decimal("4.00")  # 14.50
    assert kpi_sales(feeds, "2025-03-01", "2025-03-31") == want
    issues = out["done"]["summary"]["issues"]
    assert issues[0]["code"] == "summary_row"
    assert issues[0]["count"] == 5


@pytest.mark.parametrize("name", ["summary_sum_amount.csv", "summary_sum_blank.csv"])
def test_trailing_sum_row_rejected(feeds: Feeds, name: str) -> None:
    # Rows: 2 x 3.50, 1 x 4.00, 3 x 3.50, 4 x 2.00 = 29.50; quantities sum to 10, prices to
    # 13.00. The last row repeats quantity 10 with price 29.50 (the revenue: loaded, it would
    # add 10 x 29.50 = 295.00, eleven times the truth) or 13.00 with no date and product.
    out = load(feeds, name, read(name))
    assert (out["record_count"], out["rejected"], out["summary_rows"]) == (4, 1, 1)
    assert rejects(feeds, out["feed_id"]) == {
        6: ["summary_row: the row repeats the column sums of the rows above; not loaded"]
    }
    assert sorted(lines_of(fact_rows(feeds, out["feed_id"]))) == [2, 3, 4, 5]
    want = 2 * Decimal("3.50") + Decimal("4.00") + 3 * Decimal("3.50") + 4 * Decimal("2.00")
    assert kpi_sales(feeds, "2025-03-01", "2025-03-02") == want == Decimal("29.50")
    p = feeds.preview("b1", name, read(name)).json()
    assert [r["line"] for r in p["rows"] if r.get("summary_row")] == [6]


def test_one_matching_column_is_not_a_summary(feeds: Feeds) -> None:
    # 1, 2, 3: the last quantity equals the sum above, nothing else does: a normal sale.
    out = load(feeds, "n.csv", read("not_summary.csv"))
    assert (out["record_count"], out["rejected"], out["summary_rows"]) == (3, 0, 0)
    want = Decimal("2.00") + 2 * Decimal("3.00") + 3 * Decimal("4.00")
    assert kpi_sales(feeds, "2025-03-01", "2025-03-02") == want


def test_summary_row_after_thousands_of_fast_rows(feeds: Feeds) -> None:
    """A long plain file goes through the fast lane; its total line still never loads."""
    lines = ["transaction_date,product_name,quantity,price"]
    qty = total = 0
    revenue = Decimal(0)
    for i in range(3000):
        q, price = 1 + i % 5, Decimal(150 + i % 7 * 25) / 100
        qty += q
        total += 1
        revenue += q * price
        lines.append(f"2025-03-{1 + i % 28:02d},P{i % 9},{q},{price:.2f}")
    lines.append(f"2025-03-31,all,{qty},{revenue:.2f}")
    out = load(feeds, "big.csv", ("\n".join(lines) + "\n").encode())
    assert (out["record_count"], out["summary_rows"]) == (total, 1)
    assert kpi_sales(feeds, "2025-03-01", "2025-03-31") == revenue
    assert staged(feeds, out["feed_id"]) == 0


# -- 2. products -------------------------------------------------------------------------------
def test_new_names_never_merge_into_each_other(feeds: Feeds) -> None:
    made = feeds.products("b1", ["Latte"], cost_price="1.20").json()["products"]
    p = feeds.preview("b1", "d.csv", read("near_duplicates.csv")).json()
    assert p["summary"]["new_product_candidates"] == ["Cold Brew", "Cold Brews"]  # no "None"
    [merge] = p["summary"]["merges"]
    assert (merge["name"], merge["product_id"], merge["lines"]) == ("Lattee", made["Latte"], [4])
    assert merge["score"] >= 70
    assert merge["rule"].startswith("rapidfuzz ratio")
    bad = {r["line"]: r["issues"] for r in p["rows"] if not r["valid"]}
    assert bad == {6: ["product_name: required"], 7: ["product_name: blank ('None' is no name)"]}
    # Unconfirmed: Lattee is a new product, Cold Brews is not merged into Cold Brew.
    out = load(feeds, "d.csv", read("near_duplicates.csv"), allow_invalid=True)
    assert sorted(out["created_products"]) == ["Cold Brew", "Cold Brews", "Lattee"]
    assert out["merged_products"] == {}
    names = {p.name for p in feeds.rt.feeds.store.products("1")}
    assert names == {"Latte", "Cold Brew", "Cold Brews", "Lattee"}
    assert "None" not in names


def test_confirmed_merge_loads_into_the_existing_product(feeds: Feeds) -> None:
    made = feeds.products("b1", ["Latte"], cost_price="1.20").json()["products"]
    out = load(
        feeds,
        "d.csv",
        read("near_duplicates.csv"),
        allow_invalid=True,
        confirm_merges=["lattee"],  # as the user typed it: case does not matter
    )
    assert out["merged_products"] == {"Lattee": made["Latte"]}
    assert sorted(out["created_products"]) == ["Cold Brew", "Cold Brews"]
    facts = fact_rows(feeds, out["feed_id"])
    rows = dict(zip(lines_of(facts), facts, strict=True))
    assert rows[4]["product_id"] == rows[5]["product_id"] == made["Latte"]
    assert rows[2]["product_id"] != rows[3]["product_id"]
    # COGS: Latte 1.20 x (1 + 1); the new products have no cost.
    assert out["done"]["summary"]["metrics"]["cogs_amount_cents"] == 240


def test_unconfirmed_fuzzy_without_auto_create_is_rejected_saying_why(feeds: Feeds) -> None:
    feeds.products("b1", ["Latte", "Cold Brew", "Cold Brews"])
    p = feeds.preview("b1", "d.csv", read("near_duplicates.csv")).json()
    r = feeds.commit("b1", p["upload_token"], allow_invalid=True)
    assert r.status_code == 202, r.text
    got = rejects(feeds, r.json()["feed_id"])
    assert "close to 'Latte'" in got[4][0]
    assert "confirm the merge" in got[4][0]


# -- 3. file shapes ----------------------------------------------------------------------------
def test_sep_line_is_honoured(feeds: Feeds) -> None:
    p = feeds.preview("b1", "s.csv", read("sep_line.csv")).json()
    assert (p["file"]["delimiter"], p["file"]["sep_line"], p["title_rows"]) == (";", True, [1])
    out = load(feeds, "s.csv", read("sep_line.csv"))
    assert out["record_count"] == 2
    assert kpi_sales(feeds, "2025-03-01", "2025-03-02") == 2 * Decimal("3.50") + Decimal("4.25")


def test_title_rows_above_the_header_are_skipped(feeds: Feeds) -> None:
    p = feeds.preview("b1", "t.csv", read("title_rows.csv")).json()
    assert p["title_rows"] == [1, 2]
    assert [r["line"] for r in p["rows"]] == [5, 6]
    out = load(feeds, "t.csv", read("title_rows.csv"))
    assert (out["rows_in"], out["record_count"]) == (2, 2)
    assert kpi_sales(feeds, "2025-03-01", "2025-03-02") == 2 * Decimal("3.50") + Decimal("4.25")


def test_title_row_without_delimiters_above_a_semicolon_header(feeds: Feeds) -> None:
    p = feeds.preview("b1", "t.csv", read("title_rows_semicolon.csv")).json()
    assert (p["file"]["delimiter"], p["title_rows"]) == (";", [1])
    load(feeds, "t.csv", read("title_rows_semicolon.csv"))
    assert kpi_sales(feeds, "2025-03-01", "2025-03-02") == 2 * Decimal("3.50") + Decimal("4.25")


def xlsx() -> bytes:
    wb = Workbook()
    notes = wb.active
    assert notes is not None
    notes.title = "Notes"
    notes.append(["exported from the till"])
    ws = wb.create_sheet("Sales")
    ws.append(["Sales March 2025"])
    ws.append([])
    ws.append(["Date", "Product", "Qty", "Unit Price"])
    ws.append([datetime(2025, 3, 1), "Latte", 2, 3.5])
    ws.append([date(2025, 3, 2), "Mocha", 1, 4.25])
    ws.append([datetime(2025, 3, 2), "Tea", 3, 0.1])
    ws.append(["Total", None, 6, 7.85])
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def test_xlsx_is_read(feeds: Feeds) -> None:
    p = feeds.preview("b1", "sales.xlsx", xlsx())
    assert p.status_code == 200, p.text
    body = p.json()
    assert body["file"]["format"] == "xlsx"
    assert [r["normalized"]["price"] for r in body["rows"][:3]] == [3.5, 4.25, 0.1]
    assert body["summary"]["summary_rows"] == 1
    out = load(feeds, "sales.xlsx", xlsx())
    assert (out["record_count"], out["summary_rows"]) == (3, 1)
    want = 2 * Decimal("3.5") + Decimal("4.25") + 3 * Decimal("0.1")  # 11.55
    assert kpi_sales(feeds, "2025-03-01", "2025-03-02") == want


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "a PNG image"),
        (b"date,product\x00\x00qty" * 64, "NUL bytes"),
        (struct.pack("<8I", *range(8)) * 64, "control characters"),
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512, "Excel 97-2003"),
        (bytes(range(1, 32)) * 40, "control characters"),
    ],
)
def test_binary_files_are_not_text(feeds: Feeds, content: bytes, what: str) -> None:
    r = feeds.preview("b1", "x.csv", content)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["type"].endswith("/not-text")
    assert "not a text file" in body["detail"]
    assert what in body["detail"]
    assert "missing" not in body["detail"]


def test_damaged_workbook_says_export_as_csv(feeds: Feeds) -> None:
    good = xlsx()
    broken = good[:200] + b"\x00" * 100 + good[300:]
    r = feeds.preview("b1", "x.xlsx", broken)
    assert r.status_code == 422, r.text
    assert "export it as CSV" in r.json()["detail"]


# -- 4. dates ----------------------------------------------------------------------------------
def test_month_first_file_is_detected(feeds: Feeds) -> None:
    p = feeds.preview("b1", "m.csv", read("month_first.csv")).json()
    assert (p["dates"]["order"], p["dates"]["source"]) == ("month_first", "detected")
    assert p["dates"]["evidence"]["month_first"] == [{"line": 2, "text": "04/13/2025"}]
    days = [r["normalized"]["transaction_date"] for r in p["rows"]]
    assert days == ["2025-04-13", "2025-04-01", "2025-05-02"]
    load(feeds, "m.csv", read("month_first.csv"))
    assert kpi_sales(feeds, "2025-04-01", "2025-04-30") == Decimal("3.50") + 2 * Decimal("3.50")
    assert kpi_sales(feeds, "2025-05-01", "2025-05-31") == Decimal("4.00")


def test_day_first_file_is_detected(feeds: Feeds) -> None:
    p = feeds.preview("b1", "d.csv", read("day_first.csv")).json()
    assert (p["dates"]["order"], p["dates"]["source"]) == ("day_first", "detected")
    days = [r["normalized"]["transaction_date"] for r in p["rows"]]
    assert days == ["2025-04-03", "2025-04-13", "2025-06-05"]


def test_ambiguous_dates_ask_and_commit_needs_the_choice(feeds: Feeds) -> None:
    content = read("ambiguous_dates.csv")
    p = feeds.preview("b1", "a.csv", content).json()
    assert p["summary"]["needs_choice"] == ["date_order"]
    assert p["summary"]["valid_rows"] == 3  # asked, not refused
    d = p["dates"]
    assert (d["order"], d["needs_choice"]) == (None, True)
    assert d["readings"]["day_first"]["examples"][0] == {
        "line": 2,
        "text": "03/04/2025",
        "date": "2025-04-03",
    }
    assert d["readings"]["month_first"]["examples"][0]["date"] == "2025-03-04"
    assert p["rows"][0]["date_readings"] == {
        "transaction_date": {"day_first": "2025-04-03", "month_first": "2025-03-04"}
    }
    r = feeds.commit("b1", p["upload_token"], auto_create_products=True)
    assert r.status_code == 422
    assert r.json()["type"].endswith("/date-order-needed")
    again = feeds.preview("b1", "a.csv", content, date_order="month_first").json()
    assert [r["normalized"]["transaction_date"] for r in again["rows"]] == [
        "2025-03-04",
        "2025-05-06",
        "2025-07-08",
    ]
    out = load(feeds, "a.csv", content, date_order="day_first")
    assert out["record_count"] == 3
    # day-first: 3 April, 5 June, 7 August.
    assert kpi_sales(feeds, "2025-04-01", "2025-04-30") == Decimal("3.50")
    assert kpi_sales(feeds, "2025-06-01", "2025-06-30") == 2 * Decimal("3.50")
    assert kpi_sales(feeds, "2025-03-01", "2025-03-31") == 0


def test_extent_is_the_range_the_data_covers(feeds: Feeds) -> None:
    empty = feeds.client.get("/dashboard/metrics/extent", headers=feeds.h("b1")).json()
    assert (empty["first"], empty["last"], empty["rows"]) == (None, None, 0)
    load(feeds, "m.csv", read("month_first.csv"))
    got = feeds.client.get("/dashboard/metrics/extent", headers=feeds.h("b1")).json()
    assert (got["first"], got["last"], got["rows"]) == ("2025-04-01", "2025-05-02", 3)
    other = feeds.client.get("/dashboard/metrics/extent", headers=feeds.h("b2")).json()
    assert other["rows"] == 0
    r = feeds.client.get("/dashboard/metrics/extent?business_id=2", headers=feeds.h("b1"))
    assert r.status_code == 404


@pytest.mark.parametrize("name", sorted(p.name for p in HONEST.glob("*.csv")))
def test_fast_lane_stages_what_the_row_path_stages(tmp_path: Path, name: str) -> None:
    fast, slow = both(tmp_path, HONEST / name)
    assert fast == slow
    for staged_row in fast.get("staged", []):
        assert "total" not in str(staged_row["product_name"]).casefold()
    if name.startswith("summary_"):
        assert any("summary_row:" in r["reasons"][0] for r in fast["rejects"])
