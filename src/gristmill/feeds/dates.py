"""Which way a file writes ``03/04/2025``: decided once per file, before any row is read.

The template's ``date_order`` (``day_first``, ``month_first``) or the uploader's choice wins.
Under ``auto`` the file's text is searched once for such dates: the first ``13/04/2025``
(first part above 12) proves day-first, a ``04/13/2025`` month-first; a later date that
contradicts the proof is rejected with its reason. A file with no proof, in which some date
reads both ways, is *ambiguous*: the preview shows both readings and the commit needs the
choice, instead of guessing (a wrong guess moves sales into other months) or refusing every
row. ``31.01.2025`` (dots) is day-first unless the
order says otherwise: the locales that write dots write the day first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from gristmill.feeds.csvread import Dialect
from gristmill.feeds.values import DAY_FIRST, MONTH_FIRST, numeric_parts

EXAMPLES = 3


@dataclass(slots=True)
class DateEvidence:
    day_first: list[tuple[int, str]] = field(default_factory=list)
    """(line, text) of dates only day-first can read (first few)."""
    month_first: list[tuple[int, str]] = field(default_factory=list)
    ambiguous: list[tuple[int, str]] = field(default_factory=list)
    day_first_count: int = 0
    """Counts are of distinct date texts."""
    month_first_count: int = 0
    ambiguous_count: int = 0
    first: dict[str, date] = field(default_factory=dict)
    """Earliest day of the numeric dates under each reading (both readings of every date)."""
    last: dict[str, date] = field(default_factory=dict)

    def see(self, line: int, text: str) -> None:
        parts = numeric_parts(text)
        if parts is None:
            return
        a, b, y = parts
        readings: dict[str, date] = {}
        for name, (mo, dy) in ((DAY_FIRST, (b, a)), (MONTH_FIRST, (a, b))):
            try:
                readings[name] = date(y, mo, dy)
            except ValueError:
                continue
        if len(readings) == 2 and a != b:
            self.ambiguous_count += 1
            if len(self.ambiguous) < EXAMPLES:
                self.ambiguous.append((line, text.strip()))
        elif len(readings) == 1:
            only = next(iter(readings))
            if only == DAY_FIRST:
                self.day_first_count += 1
                if len(self.day_first) < EXAMPLES:
                    self.day_first.append((line, text.strip()))
            else:
                self.month_first_count += 1
                if len(self.month_first) < EXAMPLES:
                    self.month_first.append((line, text.strip()))
        for name, d in readings.items():
            if name not in self.first or d < self.first[name]:
                self.first[name] = d
            if name not in self.last or d > self.last[name]:
                self.last[name] = d


@dataclass(frozen=True, slots=True)
class DateDecision:
    setting: str
    """The template's ``date_order``."""
    order: str | None
    """The order rows are parsed with (None: no numeric date needs one, or undecided)."""
    source: str
    """``template``, ``choice``, ``detected``, ``none`` (nothing to decide) or ``undecided``."""
    evidence: DateEvidence | None = None

    @property
    def needs_choice(self) -> bool:
        return self.source == "undecided"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "setting": self.setting,
            "order": self.order,
            "source": self.source,
            "needs_choice": self.needs_choice,
        }
        ev = self.evidence
        if ev is not None:
            out["evidence"] = {
                "day_first": [{"line": ln, "text": t} for ln, t in ev.day_first],
                "month_first": [{"line": ln, "text": t} for ln, t in ev.month_first],
                "ambiguous": [{"line": ln, "text": t} for ln, t in ev.ambiguous],
                "counts": {
                    "day_first": ev.day_first_count,
                    "month_first": ev.month_first_count,
                    "ambiguous": ev.ambiguous_count,
                },
            }
            if self.needs_choice:
                out["readings"] = {
                    name: {
                        "first": ev.first[name].isoformat() if name in ev.first else None,
                        "last": ev.last[name].isoformat() if name in ev.last else None,
                        "examples": [
                            {"line": ln, "text": t, "date": _read(t, name)}
                            for ln, t in ev.ambiguous
                        ],
                    }
                    for name in (DAY_FIRST, MONTH_FIRST)
                }
        return out


def _read(text: str, order: str) -> str | None:
    parts = numeric_parts(text)
    if parts is None:
        return None
    a, b, y = parts
    mo, dy = (b, a) if order == DAY_FIRST else (a, b)
    try:
        return date(y, mo, dy).isoformat()
    except ValueError:
        return None


def decide(setting: str, choice: str | None, evidence_of: Any) -> DateDecision:
    """``evidence_of()`` reads the file's date column (only called under ``auto``)."""
    if choice is not None:
        return DateDecision(setting, choice, "choice")
    if setting != "auto":
        return DateDecision(setting, setting, "template")
    ev: DateEvidence = evidence_of()
    if ev.day_first_count and not ev.month_first_count:
        return DateDecision(setting, DAY_FIRST, "detected", ev)
    if ev.month_first_count and not ev.day_first_count:
        return DateDecision(setting, MONTH_FIRST, "detected", ev)
    if ev.ambiguous_count or (ev.day_first_count and ev.month_first_count):
        return DateDecision(setting, None, "undecided", ev)
    return DateDecision(setting, None, "none", ev)


_ANYWHERE = re.compile(r"[/-]\d{1,2}[/-]\d{4}(?!\d)")
"""The tail of ``NN/NN/YYYY``: starting at a separator keeps the scan fast over ISO dates."""
_HEAD = re.compile(r"(?<![\d/.-])\d{1,2}$")
CHUNK = 1 << 20
SAMPLE = 64 * 1024


def gather(path: Path, dialect: Dialect) -> DateEvidence:
    """Evidence from the file's text: a regular expression over it, not a CSV parse. Stops
    at the first proof: a later date that contradicts it fails its row with "not a calendar
    date", which a person can see; only a file without proof is read to the end (for both
    readings' first and last day). A file whose first 64 KiB hold no such date at all (ISO
    dates, say) is not read further: a stray ``03/04/2025`` later is then rejected as
    ambiguous by the commit, never guessed."""
    ev = DateEvidence()
    line, carry, seen = 1, "", 0
    distinct: set[str] = set()  # a file repeats its few hundred days: each is judged once
    with path.open("r", encoding=dialect.encoding, errors="replace", newline="") as fh:
        while True:
            chunk = fh.read(SAMPLE if seen == 0 else CHUNK)
            text = carry + chunk
            cut = len(text) if not chunk else text.rfind("\n") + 1
            body, carry = text[:cut], text[cut:]
            pos = 0
            for m in _ANYWHERE.finditer(body):
                head = _HEAD.search(body, max(0, m.start() - 3), m.start())
                if head is None or body[m.start()] != body[m.end() - 5]:
                    continue
                line += body.count("\n", pos, head.start())
                pos = head.start()
                text = body[head.start() : m.end()]
                if text in distinct:
                    continue
                distinct.add(text)
                ev.see(line, text)
                if ev.day_first_count or ev.month_first_count:
                    return ev
            line += body.count("\n", pos)
            seen += len(chunk)
            if not chunk or (seen <= SAMPLE and not distinct):
                return ev
