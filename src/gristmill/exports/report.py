"""A metrics export: metric-layer answers per bucket and dimension over a calendar month.

The rows come from the same planner and executor as ``/v1/metrics`` and the pack views
(rollups where they answer, rows otherwise), so a CSV never disagrees with the dashboard.
Its totals are checked against a separate metric-layer query over the whole period — no
grain, no group-by — which must agree to the unit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from gristmill.core.errors import bad_request
from gristmill.exports.csvout import cell
from gristmill.metrics.model import Condition, MetricQuery
from gristmill.metrics.service import run
from gristmill.metrics.timerange import TimeRange, local_midnight
from gristmill.pack.exports import MetricsExportSpec
from gristmill.pack.models import Pack
from gristmill.warehouse.base import Warehouse

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


@dataclass(frozen=True, slots=True)
class Period:
    label: str
    """``2026-11``."""
    start: datetime
    end: datetime
    """Exclusive, UTC: the first instant of the next month in the export's zone."""
    to_date: bool
    """Asked as ``mtd`` (the month is not over)."""

    def range(self, tz: ZoneInfo) -> TimeRange:
        return TimeRange(self.start, self.end, tz)


def resolve_period(text: str, tz: ZoneInfo, now: datetime) -> Period:
    """``2026-11`` (a calendar month in ``tz``) or ``mtd`` (the current month so far: the
    whole month, whose later days simply hold nothing yet)."""
    local_now = now.astimezone(tz)
    if text == "mtd":
        year, month = local_now.year, local_now.month
    else:
        m = MONTH.match(text)
        if m is None:
            raise bad_request("invalid-period", "period is a month like 2026-11, or mtd")
        year, month = int(m.group(1)), int(m.group(2))
    first = local_midnight(datetime(year, month, 1).date(), tz)
    nxt = local_midnight((datetime(year, month, 28) + timedelta(days=4)).replace(day=1).date(), tz)
    if first > local_now:
        raise bad_request("invalid-period", f"{text} has not started yet")
    return Period(
        f"{year:04d}-{month:02d}",
        first.astimezone(UTC),
        nxt.astimezone(UTC),
        to_date=nxt > local_now,
    )


def columns(spec: MetricsExportSpec) -> list[str]:
    return [spec.grain, *spec.group_by, *spec.metrics]


def _query(
    pack: Pack,
    spec: MetricsExportSpec,
    period: Period,
    scope: Sequence[Condition],
    *,
    per_bucket: bool,
) -> MetricQuery:
    names = tuple(dict.fromkeys(spec.metrics.values()))
    return MetricQuery(
        pack,
        names,
        period.range(ZoneInfo(spec.tz)),
        spec.grain if per_bucket else None,
        tuple(spec.group_by) if per_bucket else (),
        (),
        tuple(scope),
    )


def rows(
    wh: Warehouse,
    pack: Pack,
    spec: MetricsExportSpec,
    period: Period,
    scope: Sequence[Condition],
) -> list[list[str]]:
    """The CSV body: one row per (bucket, group), in bucket then group order."""
    result = run(wh, _query(pack, spec, period, scope, per_bucket=True))
    out = []
    for r in result.rows:
        out.append(
            [
                str(r["bucket"]),
                *[cell(r[d]) for d in spec.group_by],
                *[cell(r[m]) for m in spec.metrics.values()],
            ]
        )
    return out


def totals(
    wh: Warehouse,
    pack: Pack,
    spec: MetricsExportSpec,
    period: Period,
    scope: Sequence[Condition],
) -> dict[str, int]:
    """The metric layer's own totals over the whole period, per CSV column."""
    result = run(wh, _query(pack, spec, period, scope, per_bucket=False))
    row = result.rows[0] if result.rows else {}
    return {col: int(row.get(m) or 0) for col, m in spec.metrics.items()}
