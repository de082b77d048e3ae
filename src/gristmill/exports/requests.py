"""What a caller may ask of an export, checked against the pack and the caller's scope.

The tenant rule is the API's: a value on a column the caller is scoped by must be the
caller's own, anything else answers 404 (no oracle of which tenants exist); a role the export
does not name answers 403.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gristmill.auth.permissions import OPERATOR, Principal
from gristmill.core.errors import Problem, bad_request, forbidden, not_found
from gristmill.metrics.model import MAX_FILTER_VALUES, Condition, typed
from gristmill.pack.exports import MetricsExportSpec, RowsExportSpec
from gristmill.pack.models import Pack

Value = str | int
ExportSpec = RowsExportSpec | MetricsExportSpec


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RowsRequest(_Body):
    """``POST /v1/exports/{pack}/{export}`` of a ``rows`` export."""

    start: datetime
    end: datetime
    """Exclusive. Times without an offset are UTC."""
    filters: dict[str, Value | list[Value]] = {}
    """Dimension -> value (or a list: any of them), among the export's ``filters``."""
    as_job: bool = False
    """Always make a job (with files and a signed URL), even for a small window."""


class MetricsRequest(_Body):
    """``POST /v1/exports/{pack}/{export}`` of a ``metrics`` export."""

    period: str = Field(pattern=r"^(\d{4}-\d{2}|mtd)$")
    """``2026-11`` or ``mtd``."""
    scope: dict[str, str] | Literal["all"] = "all"
    """``{"vendor_store_id": "vnd_000"}``: one tenant's numbers; ``all``: everything the
    caller may see (a scoped caller's own scope either way)."""


def parse_body(model: type[_Body], body: Mapping[str, Any]) -> Any:
    try:
        return model.model_validate(dict(body))
    except ValidationError as exc:
        errors = [
            {"path": "/" + "/".join(str(p) for p in e["loc"]), "message": e["msg"]}
            for e in exc.errors()
        ]
        raise Problem(
            422, "invalid-request", "Invalid request", errors[0]["message"], errors=errors
        ) from None


def utc(t: datetime) -> datetime:
    return (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).astimezone(UTC)


def find_export(
    p: Principal, packs: Mapping[str, Pack], pack_name: str, export_name: str
) -> tuple[Pack, ExportSpec]:
    """The export a caller names: 403 for a key of another pack or a role the export does
    not name, 404 for an export that does not exist."""
    if p.role != OPERATOR and p.pack is not None and p.pack != pack_name:
        raise forbidden(f"this key is for pack {p.pack!r}")
    pack = packs.get(pack_name)
    spec = pack.spec.exports.get(export_name) if pack is not None else None
    if pack is None or spec is None:
        raise not_found(f"no export {export_name[:64]!r} in pack {pack_name[:64]!r}")
    if p.role != OPERATOR and p.role not in spec.roles:
        raise forbidden(f"export {export_name!r} is for roles: {', '.join(spec.roles)}")
    return pack, spec


def own_values(scope: Sequence[Condition]) -> dict[str, str]:
    return {c.column: str(c.value) for c in scope}


def row_filters(
    pack: Pack,
    spec: RowsExportSpec,
    asked: Mapping[str, Value | list[Value]],
    own: Mapping[str, str],
) -> list[list[Any]]:
    """Checked filters as ``[column, op, value]`` (JSON-safe, stored with the job)."""
    types = {c.name: c.type for c in pack.columns(spec.table)}
    out: list[list[Any]] = []
    for col, raw in sorted(asked.items()):
        if col not in spec.filters:
            raise bad_request(
                "invalid-filter",
                f"{col[:64]!r} is not a filter of this export; "
                f"allowed: {', '.join(spec.filters) or 'none'}",
            )
        values = raw if isinstance(raw, list) else [raw]
        if not values or len(values) > MAX_FILTER_VALUES:
            raise bad_request("invalid-filter", f"{col}: 1 to {MAX_FILTER_VALUES} values")
        typed_values = [typed(str(v), types[col], col) for v in values]
        if col in own and any(str(v) != own[col] for v in typed_values):
            raise not_found(f"no {col} {str(values[0])[:64]!r} here")
        if len(typed_values) == 1:
            out.append([col, "eq", typed_values[0]])
        else:
            out.append([col, "in", sorted(set(typed_values), key=str)])
    return out


def metrics_scope(
    pack: Pack,
    tables: Sequence[str],
    asked: Mapping[str, str] | Literal["all"],
    own: Mapping[str, str],
) -> dict[str, str]:
    """The caller's own scope plus the tenant it asked for (dimensions of every table)."""
    out = dict(own)
    if asked == "all":
        return out
    dims = set.intersection(*(set(pack.spec.tables[t].dimensions) for t in tables))
    for col, value in sorted(asked.items()):
        if col not in dims:
            raise bad_request(
                "invalid-scope",
                f"{col[:64]!r} cannot scope this export; use one of {', '.join(sorted(dims))}",
            )
        if col in own and str(value) != own[col]:
            raise not_found(f"no {col} {str(value)[:64]!r} here")
        out[col] = str(value)
    return out


def job_key(
    pack: str,
    export: str,
    scope: Mapping[str, str],
    period: str,
    params: Mapping[str, Any],
    watermark_us: int | None,
) -> str:
    """Idempotency key: the same export, scope, period and parameters at the same
    watermark is the same job."""
    doc = {
        "pack": pack,
        "export": export,
        "scope": dict(scope),
        "period": period,
        "params": dict(params),
        "watermark": watermark_us,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def compact(t: datetime) -> str:
    """``20261101T000000Z`` (a time inside an object key)."""
    return (
        utc(t).strftime("%Y%m%dT%H%M%S") + (f".{t.microsecond:06d}" if t.microsecond else "") + "Z"
    )
