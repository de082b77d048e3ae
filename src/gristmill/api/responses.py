"""Fast JSON and problem+json responses (orjson; no pydantic on the ingest path)."""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import Response

from gristmill.core.errors import PROBLEM_JSON, Problem, problem_bytes


class JSONBytes(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def problem_response(p: Problem) -> Response:
    return Response(
        problem_bytes(p), status_code=p.status, headers=p.headers, media_type=PROBLEM_JSON
    )


_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "invalid-request",
    429: "rate-limited",
    503: "unavailable",
}


def http_problem(request: Request, exc: HTTPException) -> Problem:
    """The framework's own errors (no route, wrong method, a route's HTTPException) as
    problems, so a client never has to handle a second error format."""
    status = exc.status_code
    raw = request.scope.get("raw_path") or b""
    if status == 404 and b"%2f" in raw.lower():
        detail = "an encoded '/' (%2F) is not allowed inside a path parameter"
    elif status == 404 and exc.detail in (None, "", "Not Found"):
        detail = f"no resource at {request.url.path[:200]}"
    elif status == 405:
        allow = (exc.headers or {}).get("Allow", "")
        detail = f"{request.method} is not allowed here" + (f"; allowed: {allow}" if allow else "")
    else:
        detail = str(exc.detail)
    try:
        title = HTTPStatus(status).phrase.capitalize()
    except ValueError:
        title = "Error"
    return Problem(
        status, _SLUGS.get(status, f"http-{status}"), title, detail, headers=dict(exc.headers or {})
    )


def validation_problem(exc: RequestValidationError) -> Problem:
    """FastAPI's 422: one ``{path, message}`` per invalid parameter or field."""
    errors = [
        {"path": "/" + "/".join(str(p) for p in e["loc"]), "message": str(e["msg"])}
        for e in exc.errors()
    ]
    detail = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:3]) or "invalid request"
    return Problem(422, "invalid-request", "Invalid request", detail, errors=errors)
