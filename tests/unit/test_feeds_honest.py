"""Rules behind "never load a wrong number": summary words and sums, date orders, templates."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from gristmill.core.errors import ConfigError
from gristmill.feeds.rows import scan
from gristmill.feeds.summary import SumRule, Sums, TailRow, WordRule
from gristmill.feeds.template import load_feeds
from gristmill.feeds.values import AmbiguousDate, CellError, parse_date
from gristmill.pack.loader import load_pack

ROOT = Path(__file__).resolve().parents[2]
HONEST = ROOT / "tests" / "fixtures" / "feeds" / "honest"
WORDS = WordRule.build()


@pytest.mark.parametrize(
    "cell",
    [
        "Total",
        "TOTAL:",
        "Grand Total",
        "grand  total",
        "Subtotal",
        "Sub-Total",
        "SUM",
        "Summe",
        "Gesamtergebnis",
        "Total général",
        "Totale complessivo",
        "Eindtotaal",
        "Jumlah",
        "Итого",
        "合計",
        "** Total **",
    ],
)
def test_summary_words_anywhere(cell: str) -> None:
    assert WORDS.hit(["2025-03-01", cell, "3", "1.00"], dated=True) == cell.strip()


@pytest.mark.parametrize("cell", ["Latte Total", "Total for March", "Mocha subtotal"])
def test_summary_phrases_only_without_a_date(cell: str) -> None:
    assert WORDS.hit(["", cell, "3", "1.00"], dated=False) == cell
    assert WORDS.hit(["2025-03-01", cell, "3", "1.00"], dated=True) is None


@pytest.mark.parametrize("cell", ["Total Care Shampoo", "Summer Tea", "Latte", "Totally Nuts"])
def test_products_that_only_look_like_totals(cell: str) -> None:
    assert WORDS.hit(["2025-03-01", cell, "3", "1.00"], dated=True) is None


def test_prefilter_covers_every_word() -> None:
    import re

    rule = WordRule.build(["Saldo"])
    pattern = re.compile(rule.prefilter().replace("(?i)", ""), re.IGNORECASE)
    assert all(pattern.search(w) for w in rule.words)


def row(line: int, q: int | None, p: int | None, *, accepted: bool = True) -> TailRow:
    return TailRow(line, {"quantity": q, "price": p}, accepted, False, False)


def test_sum_rule_needs_corroboration_and_the_end() -> None:
    rule = SumRule(("quantity", "price"), ("quantity", "price"))
    rows = [row(2, 1, 200), row(3, 2, 300)]
    assert rule.trailing(Sums(), [*rows, row(4, 3, 400)]) == []  # quantity alone
    assert rule.trailing(Sums(), [*rows, row(4, 3, 500)]) == [4]  # quantity and price
    assert rule.trailing(Sums(), [*rows, row(4, 3, 800)]) == [4]  # quantity and revenue
    assert rule.trailing(Sums(), [*rows, row(4, 3, 500), row(5, 1, 100)]) == []  # not trailing
    assert rule.trailing(Sums(), [row(2, 1, 200), row(3, 1, 200)]) == []  # one row above


def test_parse_date_orders() -> None:
    assert parse_date("13/04/2025") == date(2025, 4, 13)
    assert parse_date("04/13/2025") == date(2025, 4, 13)
    assert parse_date("03/04/2025", "day_first") == date(2025, 4, 3)
    assert parse_date("03-04-2025", "month_first") == date(2025, 3, 4)
    assert parse_date("04.03.2025") == date(2025, 3, 4)  # dots: day first
    assert parse_date("04/04/2025") == date(2025, 4, 4)  # both readings agree
    with pytest.raises(AmbiguousDate):
        parse_date("03/04/2025")
    with pytest.raises(CellError):
        parse_date("13/04/2025", "month_first")


def pack_with(tmp_path: Path, old: str, new: str) -> Path:
    dst = tmp_path / "sales_feeds"
    shutil.copytree(ROOT / "packs" / "sales_feeds", dst)
    text = (dst / "feeds.yaml").read_text()
    assert old in text
    (dst / "feeds.yaml").write_text(text.replace(old, new))
    return dst


def test_template_declares_month_first(tmp_path: Path) -> None:
    pack = pack_with(tmp_path, "date_order: auto", "date_order: month_first")
    sales = load_feeds(load_pack(pack))["sales"]
    with scan(sales, HONEST / "ambiguous_dates.csv") as s:
        assert (s.dates.order, s.dates.source, s.dates.needs_choice) == (
            "month_first",
            "template",
            False,
        )
        days = [r.normalized["transaction_date"] for r in s.rows]
    assert days == [date(2025, 3, 4), date(2025, 5, 6), date(2025, 7, 8)]


def test_template_summary_columns_are_checked(tmp_path: Path) -> None:
    pack = pack_with(tmp_path, "sum_columns: [quantity, price, discount]", "sum_columns: [channel]")
    with pytest.raises(ConfigError, match="summary_rows: 'channel' is no integer or money"):
        load_feeds(load_pack(pack))


def test_first_proof_decides_and_contradictions_fail_their_row(tmp_path: Path) -> None:
    sales = load_feeds(load_pack(ROOT / "packs" / "sales_feeds"))["sales"]
    f = tmp_path / "mixed.csv"
    f.write_text(
        "transaction_date,product_name,quantity,price\n"
        "03/04/2025,Latte,1,1.00\n13/04/2025,Latte,1,1.00\n04/13/2025,Latte,1,1.00\n"
    )
    with scan(sales, f) as s:
        assert (s.dates.order, s.dates.source) == ("day_first", "detected")
        rows = list(s.rows)
    assert [r.normalized["transaction_date"] for r in rows[:2]] == [
        date(2025, 4, 3),
        date(2025, 4, 13),
    ]
    assert rows[2].issues == ["transaction_date: not a calendar date: '04/13/2025'"]
