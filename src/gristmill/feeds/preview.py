"""The preview of an upload: its first rows as the commit would see them, and every
decision the commit needs from a person, stated before anything loads.

Besides each row (original, normalized, valid, issues, product match) it reports: summary
(``Total``) rows as such; fuzzy product matches as *proposed merges* (name -> product, score
and rule, lines) that the commit applies only when confirmed; names that would become new
products (never a blank one); title rows skipped above the header; and the file's day/month
order, or, when the file does not decide it, both readings and ``needs_choice``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gristmill.feeds.products import Match, Matcher
from gristmill.feeds.rows import Row, Scan, mark_summary
from gristmill.feeds.summary import SUM_REASON, SumRule, Sums, TailRow
from gristmill.feeds.template import Feed


def _tail_row(feed: Feed, rule: SumRule, row: Row) -> TailRow:
    required = [c for c in feed.required if c not in rule.columns]
    return TailRow(
        row.line,
        {c: row.normalized.get(c) for c in rule.columns},
        row.valid,
        row.summary,
        any(row.normalized.get(c) is None for c in required),
    )


def preview_rows(
    feed: Feed,
    s: Scan,
    limit: int,
    matcher: Matcher | None,
    fmt: Callable[[Mapping[str, Any]], dict[str, Any]],
) -> dict[str, Any]:
    """Rows, summary and decisions of the first ``limit`` rows of an open scan."""
    rows: list[Row] = []
    more = False
    for row in s.rows:
        if len(rows) >= limit:
            more = True
            break
        rows.append(row)
    rule = SumRule(feed.sum_columns, feed.spec.summary_rows.amount)
    if not more:  # the whole file is here: its trailing rows are known
        flagged = set(rule.trailing(Sums(), [_tail_row(feed, rule, r) for r in rows]))
        for r in rows:
            if r.line in flagged:
                mark_summary(r, SUM_REASON)
    lookup = feed.spec.lookup
    candidates: dict[str, None] = {}
    merges: dict[str, dict[str, Any]] = {}
    items: list[dict[str, Any]] = []
    for row in rows:
        match: Match | None = None
        name = row.normalized.get(lookup.column) if lookup is not None else None
        if matcher is not None and name and not row.summary:
            match = matcher.match(str(name))
            if match.status == "none":
                candidates[str(name)] = None
            elif match.status == "fuzzy" and match.product is not None:
                m = merges.setdefault(
                    str(name),
                    {
                        "name": str(name),
                        "product_id": match.product.id,
                        "product_name": match.product.name,
                        "score": round(match.score or 0.0, 1),
                        "rule": matcher.rule(match),
                        "lines": [],
                    },
                )
                m["lines"].append(row.line)
        item: dict[str, Any] = {
            "line": row.line,
            "original": row.original,
            "normalized": fmt(row.normalized),
            "valid": row.valid,
            "issues": row.issues,
        }
        if row.summary:
            item["summary_row"] = True
        if row.readings:
            item["date_readings"] = row.readings
        if matcher is not None:
            item["product_match"] = (match or Match("none")).as_dict()
            if row.summary or not name:
                item["product_match"] = {"status": "n/a"}
        items.append(item)
    needs = ["date_order"] if s.dates.needs_choice else []
    return {
        "rows": items,
        "title_rows": s.skipped,
        "dates": s.dates.as_dict(),
        "summary": {
            "total_rows": len(rows),
            "valid_rows": sum(r.valid for r in rows),
            "invalid_rows": sum(not r.valid for r in rows),
            "new_product_candidates": list(candidates),
            "summary_rows": sum(r.summary for r in rows),
            "merges": list(merges.values()),
            "needs_choice": needs,
            "more_rows": more,
        },
    }
