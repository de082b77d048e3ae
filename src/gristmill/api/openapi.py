"""The OpenAPI document, completed from what the code does rather than kept by hand.

FastAPI describes bodies and parameters it validates and nothing else. Here every operation
also gets: its security (from whether the route depends on
:func:`~gristmill.api.deps.get_principal`), 401/403 for those that have it, 404 for those with
path parameters, 422 as problem+json (FastAPI's own schema describes a body we never send),
429 + ``Retry-After`` where a rate limit applies, and every error as
``application/problem+json``. The ingest endpoints, answered outside FastAPI, get their
per-dialect bodies and answers from :mod:`gristmill.api.ingest_openapi`. ``/metrics`` is the
Prometheus text format. Statuses a single route adds on top (409, 413 ...) it declares itself
with ``responses=problems(...)``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gristmill.api import ingest_openapi as ingest_doc
from gristmill.core.errors import PROBLEM_JSON
from gristmill.metrics.timerange import known_zones

PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details. Extension members (limits, retry hints, a "
    "dialect's own error fields such as Segment's code/message) may follow.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "description": "A stable URI naming the problem."},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "One reason per item (event, parameter, field) where items exist.",
            "items": {
                "type": "object",
                "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
                "additionalProperties": True,
            },
        },
    },
    "additionalProperties": True,
}

RETRY_AFTER = {
    "description": "Whole seconds to wait before retrying.",
    "schema": {"type": "integer", "minimum": 0},
}

TEXTS = {
    400: "The request is malformed (a body that is not JSON, truncated, empty ...); "
    "the reason is in detail.",
    401: "No credentials, or unknown, revoked, expired or oversized ones.",
    403: "The credentials may not do this.",
    404: "Not found.",
    409: "Conflicts with the current state.",
    413: "Over a size limit (the limit is in the body); nothing is kept.",
    415: "An unsupported Content-Type or Content-Encoding.",
    422: "The request is well-formed but invalid; one reason per item in errors.",
    429: "Over a rate limit; retry after Retry-After seconds. Nothing is kept.",
    503: "Temporarily unavailable (the log is over its cap, not ready); retry after "
    "Retry-After seconds. Nothing is kept.",
}


def problem(status: int, description: str | None = None) -> dict[str, Any]:
    """One problem+json response object (with ``Retry-After`` on 429 and 503)."""
    out: dict[str, Any] = {
        "description": description or TEXTS.get(status, "Error."),
        "content": {PROBLEM_JSON: {"schema": PROBLEM_REF}},
    }
    if status in (429, 503):
        out["headers"] = {"Retry-After": RETRY_AFTER}
    if status == 401:
        out["headers"] = {
            "WWW-Authenticate": {"description": "The scheme to use.", "schema": {"type": "string"}}
        }
    return out


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route decorator: extra error statuses the route answers."""
    return {s: problem(s) for s in statuses}


SECURITY_SCHEMES = {
    "basic": {
        "type": "http",
        "scheme": "basic",
        "description": "Segment style: the write key as the user name, no password.",
    },
}


def _merge(op: dict[str, Any], status: int | str, response: dict[str, Any]) -> None:
    responses = op.setdefault("responses", {})
    key = str(status)
    if key not in responses or key == "422":
        responses[key] = response
    else:
        current = responses[key]
        current.setdefault("content", {}).update(response.get("content", {}))
        if "headers" in response:
            current.setdefault("headers", {}).update(response["headers"])


def _ingest_ops(spec: dict[str, Any], routes: Mapping[tuple[str, str], Any]) -> None:
    bodies = ingest_doc.request_bodies()
    for (method, path), route in routes.items():
        op = spec["paths"][path][method.lower()]
        dialect = route.dialect
        body = bodies.get(dialect)
        if body is not None and method == "POST":
            op["requestBody"] = body
        if dialect == "posthog":
            get = method == "GET"
            op["parameters"] = ingest_doc.POSTHOG_GET if get else [ingest_doc.POSTHOG_KEY]
        elif dialect == "snowplow_pixel":
            op["parameters"] = list(ingest_doc.PIXEL_QUERY)
        components = spec["components"]["securitySchemes"]
        components.setdefault("bearer", {"type": "http", "scheme": "bearer"})
        op["security"] = [{"bearer": []}, {"basic": []}]
        if dialect in ("segment", "posthog", "posthog_v1", "snowplow", "snowplow_pixel"):
            op["security"].append({})  # the key may come in the body or query instead
        op["responses"] = {
            code: {"description": text, "content": ingest_doc.success_content(dialect)}
            for code, text in ingest_doc.SUCCESS[dialect].items()
        }
        for status in (400, 401, 403, 413, 415, 422, 429, 503):
            _merge(op, status, problem(status))


def describe(
    app: FastAPI,
    ingest_routes: Mapping[tuple[str, str], Any],
    rate_limited: Callable[[str], bool],
) -> Callable[[], dict[str, Any]]:
    """An ``app.openapi`` that builds the completed document once."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        components = spec.setdefault("components", {})
        schemas = components.setdefault("schemas", {})
        schemas.pop("HTTPValidationError", None)
        schemas.pop("ValidationError", None)
        schemas["Problem"] = PROBLEM_SCHEMA
        # A pattern, not an enum of ~600 names: the contract test would try every one.
        zones = sorted(known_zones())
        schemas["TimeZone"] = {
            "type": "string",
            "description": "An IANA time zone name this server knows (a 400 names any other).",
            "pattern": TZ_PATTERN,
            "examples": ["UTC", "Europe/Berlin", "America/New_York"],
            "x-known": zones,
        }
        components.setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
        for path, ops in spec.get("paths", {}).items():
            for method, op in ops.items():
                _complete(op, path)
                _refine(op)
                if rate_limited(path) and method.upper() in ("GET", "HEAD"):
                    _merge(op, 429, problem(429))
        _ingest_ops(spec, ingest_routes)
        metrics = spec.get("paths", {}).get("/metrics", {}).get("get")
        if metrics is not None:
            metrics["responses"]["200"] = {
                "description": "Prometheus text exposition format 0.0.4.",
                "content": {"text/plain": {"schema": {"type": "string"}}},
            }
            _merge(metrics, 403, problem(403, "The client address is not in metrics_allow."))
        app.openapi_schema = spec
        return spec

    return openapi


# Routes whose principal is resolved outside FastAPI's dependency graph (the feeds
# workbench checks a CSRF header first), and statuses a family of routes answers that the
# route signature cannot show.
SECURED_PREFIXES = ("/dashboard/data-feeds",)
EXTRA: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("/dashboard/data-feeds", (403,)),
    ("/dashboard/metrics/", (404,)),  # the feeds pack is not served here
    ("/v1/exports/download/", (403,)),  # not a link this server signed, or expired
)


def _complete(op: dict[str, Any], path: str) -> None:
    """Generic statuses. ``security`` is there when the route depends on get_principal
    (its declared schemes, see :mod:`gristmill.api.deps`)."""
    params: Iterable[dict[str, Any]] = op.get("parameters", [])
    if path.startswith(SECURED_PREFIXES):
        op["security"] = [{"bearer": []}, {"session": []}]
    if "422" in op.get("responses", {}):
        _merge(op, 422, problem(422, "A parameter or the body is invalid: one reason per item."))
        _merge(
            op,
            400,
            problem(
                400,
                "A value the schema allows but the server does not know (a time "
                "zone, preset, cursor, filter ...); the reason is in detail.",
            ),
        )
    if any(p.get("in") == "path" for p in params):
        _merge(op, 404, problem(404))
    if op.get("security"):
        _merge(op, 401, problem(401))
        _merge(op, 403, problem(403))
    for prefix, statuses in EXTRA:
        if path.startswith(prefix):
            for status in statuses:
                _merge(op, status, problem(status))


TZ_PATTERN = "^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$"

PARAMETERS: dict[str, dict[str, Any]] = {
    "tz": {"$ref": "#/components/schemas/TimeZone"},
    "action": {
        "type": "string",
        "maxLength": 64,
        "pattern": "^[A-Za-z0-9._*]*[A-Za-z0-9][A-Za-z0-9._*]*$",
    },
}
"""Parameter schemas the signature cannot carry (a str checked against an allowlist)."""


def _refine(op: dict[str, Any]) -> None:
    for param in op.get("parameters", []):
        schema = PARAMETERS.get(param.get("name", ""))
        if schema is not None and param.get("in") == "query":
            nullable = "anyOf" in param.get("schema", {})
            param["schema"] = {"anyOf": [schema, {"type": "null"}]} if nullable else schema


def allowed_methods(spec: Mapping[str, Any], path: str) -> list[str]:
    """The methods the document lists for a concrete path (``Allow`` of a 405)."""
    # A literal segment wins over a parameter (/v1/quarantine/replay is not an id).
    for template in sorted(spec.get("paths", {}), key=lambda t: t.count("{")):
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            return sorted(m.upper() for m in spec["paths"][template])
    return []
