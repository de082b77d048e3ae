"""Pack format v1, exports part: CSV exports a pack declares (docs/exports.md).

Two kinds. ``rows``: the raw rows of one table in a caller's time window (an incident
slice). ``metrics``: metric-layer answers per time bucket and dimension over a calendar month
(a finance report), reconciled against the metric layer's own totals. Both name the roles
that may ask and the scope that limits the rows, like views do.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

from gristmill.core.durations import format_duration, parse_duration
from gristmill.pack.names import IDENT

Ident = Annotated[str, Field(pattern=IDENT)]
ROUTE = r"^/([a-z0-9_\-/]|\{[A-Za-z][A-Za-z0-9_]{0,62}\})+$"


def _duration(v: Any) -> Any:
    return parse_duration(v) if isinstance(v, str) else v


Duration = Annotated[
    timedelta, BeforeValidator(_duration), PlainSerializer(format_duration, return_type=str)
]


class _Export(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = ""
    description: str = ""
    roles: list[Ident] = Field(min_length=1)
    """Who may ask for it (others 403). Reading jobs needs ``exports:read`` as well."""
    scope: dict[Ident, Ident] = {}
    """column -> claim: rows are limited to the caller's claim value (on top of role scope)."""
    prefix_by: Ident | None = None
    """A scope column: when an export is for one value of it, its objects live under
    ``<value>/`` (each tenant's files under its own prefix); otherwise under ``_all/``."""
    route: Annotated[str, Field(pattern=ROUTE)] | None = None
    """A route of the pack's own (the seed's ``/analytics/v1/orgs/{orgId}/exports/incident``):
    ``POST`` asks for the export, ``GET`` lists its jobs, ``GET {route}/{job_id}`` shows one.
    The engine's ``/v1/exports/{pack}/{export}`` works as well."""
    path: dict[Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,62}$")], Ident] = {}
    """route parameter -> column: a rows export filters on it, a metrics export is scoped to
    it; a caller scoped to another value gets 404."""

    @model_validator(mode="after")
    def _params(self) -> _Export:
        params = re.findall(r"\{([A-Za-z][A-Za-z0-9_]{0,62})\}", self.route or "")
        if sorted(params) != sorted(self.path):
            raise ValueError(
                f"route parameters {sorted(params)} must be exactly the keys of path "
                f"{sorted(self.path)}"
            )
        return self


class RowsExportSpec(_Export):
    """Raw rows of one table in a time window, as CSV."""

    kind: Literal["rows"]
    table: Ident
    columns: list[Ident] = []
    """Columns in CSV order; default every column of the table except JSON ones
    (``properties``, ``context``: nested, and where personal data usually sits)."""
    filters: list[Ident] = []
    """Dimensions of the table a caller may filter by (``{"event_type": "order_paid"}``)."""
    max_window: Duration = timedelta(days=31)
    """Longest ``end - start`` a caller may ask for."""
    stream_max_rows: int = Field(10_000, ge=0)
    """A window holding at most this many rows is streamed back at once; more become a job."""


class MetricsExportSpec(_Export):
    """Metric answers per bucket and dimension over a period, as CSV."""

    kind: Literal["metrics"]
    metrics: dict[Ident, Ident] = Field(min_length=1)
    """CSV column -> metric. Only exact, additive metrics (``count``, and ``sum`` of integer
    columns) so the file's totals can be reconciled to the metric layer's with 0 difference."""
    group_by: list[Ident] = []
    grain: Literal["hour", "day", "week", "month"] = "day"
    period: Literal["month"] = "month"
    """A calendar month (``2026-11``) or the month to date (``mtd``) in ``tz``."""
    tz: str = "UTC"


ExportSpec = Annotated[RowsExportSpec | MetricsExportSpec, Field(discriminator="kind")]
