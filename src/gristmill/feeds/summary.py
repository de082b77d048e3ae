"""Summary rows: the ``Total`` line a spreadsheet leaves under the data, never a sale.

Two rules, both rejecting the row with the issue code ``summary_row`` (its own reason, so a
person sees why and the commit does not fail for it):

* **Words.** A cell that *is* a summary word (``Total``, ``Grand Total``, ``Subtotal``,
  ``Sum``, the labels localized spreadsheets write: ``Summe``, ``Gesamtergebnis``, ``Total
  général``, ``Totale complessivo``, ``Eindtotaal``, ``Suma``, ``Soma``, ``Jumlah``,
  ``Итого``, ``合計``/``合计``/``总计``; case, surrounding spaces and ``: * - = ( ) [ ] .``
  ignored), anywhere in the file; or a cell that starts or ends with one (``Latte Total``,
  which Excel's Subtotal command writes, ``Total for March``) in a row whose date cell is
  blank or no date (a real line always has its date, so a product named ``Total Care`` sold
  on a day still loads).
* **Sums.** A trailing row (no accepted row after it) whose numeric cells equal the column
  sums of the accepted rows above it (at least two), corroborated: two columns equal their
  sums, or a money cell equals the sum of ``quantity x price`` above (the row carries the
  revenue), or the row lacks its identity (a required text or date cell blank). One column
  alone is not enough: quantities 1, 2, 3 are a normal file.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

SUMMARY_CODE = "summary_row"

WORDS = (
    "total",
    "totals",
    "grand total",
    "subtotal",
    "sub total",
    "sub-total",
    "sum",
    "summe",
    "gesamt",
    "gesamtsumme",
    "gesamtergebnis",
    "total général",
    "total general",
    "totale",
    "totale complessivo",
    "totaal",
    "eindtotaal",
    "suma",
    "soma",
    "jumlah",
    "total keseluruhan",
    "итого",
    "合計",
    "合计",
    "总计",
)
"""Built-in summary labels (casefolded). A template adds its own with ``summary_rows.words``."""

STEMS = ("total", "totaal", "sum", "soma", "gesamt", "jumlah", "итого", "合計", "合计", "总计")
"""Every word above contains one of these: the fast lane's cheap pre-filter (a superset)."""

_STRIP = " \t:*-=()[].#"


def _clean(cell: str) -> str:
    return " ".join(cell.strip(_STRIP).split()).casefold()


@dataclass(frozen=True, slots=True)
class WordRule:
    words: frozenset[str]

    @staticmethod
    def build(extra: Iterable[str] = ()) -> WordRule:
        return WordRule(frozenset(WORDS) | {_clean(w) for w in extra})

    def prefilter(self) -> str:
        """An RE2 pattern matching every cell :meth:`hit` could flag (and more)."""
        stems = set(STEMS) | {w for w in self.words if not any(s in w for s in STEMS)}
        return "(?i)(" + "|".join(re.escape(s) for s in sorted(stems)) + ")"

    def hit(self, fields: Sequence[str], dated: bool) -> str | None:
        """The cell that makes the row a summary row, else None. ``dated``: the row's date
        cell holds a date."""
        for cell in fields:
            c = _clean(cell)
            if not c:
                continue
            if c in self.words:
                return cell.strip()
            if not dated:
                words = c.split(" ")
                for n in (1, 2):
                    if " ".join(words[:n]) in self.words or " ".join(words[-n:]) in self.words:
                        return cell.strip()
        return None


def reason(cell: str) -> str:
    return f"{SUMMARY_CODE}: a total line ({cell[:60]!r}), not a sale; not loaded"


SUM_REASON = f"{SUMMARY_CODE}: the row repeats the column sums of the rows above; not loaded"


@dataclass(slots=True)
class Sums:
    """Column sums and count of accepted rows, and the sum of quantity x price."""

    columns: dict[str, int] = field(default_factory=dict)
    count: int = 0
    amount: int = 0

    def add(self, values: Mapping[str, int | None], amount: tuple[str, str] | None) -> None:
        self.count += 1
        for c, v in values.items():
            if v is not None:
                self.columns[c] = self.columns.get(c, 0) + v
        if amount is not None:
            q, p = values.get(amount[0]), values.get(amount[1])
            if q is not None and p is not None:
                self.amount += q * p

    def minus(self, values: Mapping[str, int | None], amount: tuple[str, str] | None) -> None:
        self.count -= 1
        for c, v in values.items():
            if v is not None:
                self.columns[c] = self.columns.get(c, 0) - v
        if amount is not None:
            q, p = values.get(amount[0]), values.get(amount[1])
            if q is not None and p is not None:
                self.amount -= q * p


@dataclass(frozen=True, slots=True)
class TailRow:
    line: int
    values: dict[str, int | None]
    """The sum columns' parsed values (None: blank or unparseable)."""
    accepted: bool
    summary: bool
    """Already a summary row by the word rule."""
    anonymous: bool
    """A required text or date cell is blank: the row names no product or day."""
    raw: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class SumRule:
    columns: tuple[str, ...]
    amount: tuple[str, str] | None
    tail: int = 8
    """Rows at the end of the file examined (a file ends in at most a few summary rows)."""

    def matches(self, r: TailRow, above: Sums) -> bool:
        if above.count < 2:
            return False
        hits = sum(
            1
            for c in self.columns
            if r.values.get(c) is not None and above.columns.get(c) == r.values[c] != 0
        )
        amount_hit = False
        if self.amount is not None and above.amount:
            amount_hit = any(
                r.values.get(c) == above.amount for c in self.columns if c != self.amount[0]
            )
        evidence = hits + amount_hit + r.anonymous
        return (hits > 0 or amount_hit) and evidence >= 2

    def trailing(self, before: Sums, tail: Sequence[TailRow]) -> list[int]:
        """Lines of ``tail`` (line order) that are trailing summary rows by the sum rule.
        ``before``: the sums of the accepted rows ahead of ``tail``."""
        s = Sums(dict(before.columns), before.count, before.amount)
        pending: list[TailRow] = []
        for r in tail:
            if r.summary:
                continue
            if self.matches(r, s):
                pending.append(r)
                continue
            if r.accepted:
                for p in pending:  # not trailing after all: real rows
                    if p.accepted:
                        s.add(p.values, self.amount)
                pending = []
                s.add(r.values, self.amount)
        return [p.line for p in pending]
