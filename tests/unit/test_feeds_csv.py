"""The messy-CSV corpus: every fixture's accepted and rejected counts and revenue to the cent.

Expected figures in ``tests/fixtures/feeds/expected.json`` were worked out by hand from the
rows of each file (quantity x price of the rows a person would accept), not by this code.
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest

from gristmill.feeds.csvread import CsvError, open_dialect
from gristmill.feeds.rows import MissingColumns, Row, scan
from gristmill.feeds.template import Feed, load_feeds
from gristmill.feeds.values import CellError, parse_date, parse_money, parse_number
from gristmill.pack.loader import load_pack

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "feeds"
EXPECTED: dict[str, dict[str, object]] = json.loads(
    (FIXTURES / "expected.json").read_text(encoding="utf-8")
)


@pytest.fixture(scope="module")
def sales() -> Feed:
    return load_feeds(load_pack(ROOT / "packs" / "sales_feeds"))["sales"]


def test_corpus_is_large_enough() -> None:
    assert len(EXPECTED) >= 20
    assert {p.name for p in FIXTURES.glob("*.csv")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture(sales: Feed, name: str) -> None:
    want = EXPECTED[name]
    path = FIXTURES / name
    if "refused" in want:
        with pytest.raises((CsvError, MissingColumns), match=str(want["refused"])):
            scan(sales, path)
        return
    with scan(sales, path) as s:
        rows = list(s.rows)
    ok = [r for r in rows if r.valid]
    bad = [r for r in rows if not r.valid]
    revenue = sum(
        (Decimal(r.normalized["quantity"]) * r.normalized["price"] for r in ok), Decimal(0)
    )
    assert (len(ok), len(bad), int(revenue)) == (
        want["accepted"],
        want["rejected"],
        want["revenue_cents"],
    ), [(r.line, r.issues) for r in bad]
    assert len(rows) == len(ok) + len(bad)
    assert all(r.issues for r in bad)
    if "rejected_lines" in want:
        assert [r.line for r in bad] == want["rejected_lines"]
    if "accepted_lines" in want:
        assert [r.line for r in ok] == want["accepted_lines"]


def test_dialects() -> None:
    assert open_dialect(FIXTURES / "03_utf16_tab.csv").delimiter == "\t"
    d = open_dialect(FIXTURES / "04_cp1252_semicolon.csv")
    assert (d.encoding.replace("_", "").replace("-", ""), d.delimiter) == ("cp1252", ";")
    assert open_dialect(FIXTURES / "02_bom_crlf.csv").bom
    assert open_dialect(FIXTURES / "05_pipe.csv").delimiter == "|"


def _rows(feed: Feed, name: str) -> list[Row]:
    with scan(feed, FIXTURES / name) as s:
        return list(s.rows)


def test_text_survives_encodings(sales: Feed) -> None:
    names = [r.normalized["product_name"] for r in _rows(sales, "04_cp1252_semicolon.csv")]
    assert names == ["Käsekuchen", "Müsli", "Brötchen"]
    names = [r.normalized["product_name"] for r in _rows(sales, "06_quoted.csv")]
    assert names == ["Latte, large", 'The "Big" Muffin', "Gift box with card", "Tea"]
    names = [r.normalized["product_name"] for r in _rows(sales, "03_utf16_tab.csv")]
    assert names == ["Café au lait", "Crème brûlée"]


def test_five_date_formats(sales: Feed) -> None:
    days = [r.normalized["transaction_date"] for r in _rows(sales, "11_date_formats.csv")]
    assert days == [date(2025, 7, d) for d in range(1, 8)]


def test_reasons_name_column_and_value(sales: Feed) -> None:
    bad = {r.line: r.issues for r in _rows(sales, "13_bad_numbers.csv") if not r.valid}
    assert bad[2] == ["quantity: not a number: 'one'"]
    assert bad[4] == ["quantity: not a whole number: '1.5'"]
    assert bad[7] == ["price: more than 2 decimals: '1.005'"]
    assert bad[9] == ["price: below the minimum 0: '(5.00)'"]


@pytest.mark.parametrize(
    ("text", "comma", "cents"),
    [
        ("1,234.56", False, 123456),
        ("1.234,56", False, 123456),
        ("1,234", False, 123400),
        ("12,34", True, 1234),
        ("12,5", False, 1250),
        ("1.234", True, 123400),
        ("1 234,50 €", True, 123450),
        ("-3", False, -300),
        ("(3.10)", False, -310),
        ("3.10-", False, -310),
        ("CHF 1'234.00", False, 123400),
    ],
)
def test_money(text: str, comma: bool, cents: int) -> None:
    assert parse_money(text, decimal_comma=comma) == cents


@pytest.mark.parametrize("text", ["", "abc", "1,2,3", "1.2.3,4,5", "12..5", "$", "1e5", "nan"])
def test_not_numbers(text: str) -> None:
    with pytest.raises(CellError):
        parse_number(text)


@pytest.mark.parametrize(
    "text", ["2025-13-01", "31.02.2025", "Foo 3, 2025", "1899-01-01", "2025-1-1x"]
)
def test_not_dates(text: str) -> None:
    with pytest.raises(CellError):
        parse_date(text)
