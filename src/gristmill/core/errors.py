"""Errors as RFC 9457 problem details.

Every error a client can see is a :class:`Problem` with a stable ``type`` URI, so clients can
branch on it without parsing prose. The API layer renders them as ``application/problem+json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

PROBLEM_BASE = "https://gristmill.dev/problems/"
PROBLEM_JSON = "application/problem+json"


@dataclass(slots=True)
class Problem(Exception):
    """A client-visible error; ``status`` is the HTTP status it maps to."""

    status: int
    slug: str
    title: str
    detail: str = ""
    errors: list[dict[str, Any]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        Exception.__init__(self, self.detail or self.title)

    @property
    def type(self) -> str:
        return PROBLEM_BASE + self.slug

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": self.type,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            out["errors"] = self.errors
        out.update(self.extra)
        return out


def problem_bytes(p: Problem, members: dict[str, Any] | None = None) -> bytes:
    """The problem as JSON; ``members`` are extension members a dialect's clients read (the
    standard members win, so the body stays a valid problem)."""
    return orjson.dumps({**members, **p.body()} if members else p.body())


def payload_too_large(limit: int, what: str) -> Problem:
    return Problem(
        413,
        "payload-too-large",
        "Payload too large",
        f"the uncompressed {what} exceeds the limit of {limit} bytes",
        extra={"limit_bytes": limit},
    )


def unavailable(detail: str, retry_after_s: int) -> Problem:
    return Problem(
        503,
        "unavailable",
        "Service unavailable",
        detail,
        headers={"Retry-After": str(retry_after_s)},
        extra={"retry_after_seconds": retry_after_s},
    )


def too_many_requests(detail: str, retry_after_s: int, **extra: Any) -> Problem:
    """429 + ``Retry-After`` (whole seconds, at least 1): a rate limit was hit."""
    retry_after_s = max(1, retry_after_s)
    return Problem(
        429,
        "rate-limited",
        "Too many requests",
        detail,
        headers={"Retry-After": str(retry_after_s)},
        extra={**extra, "retry_after_seconds": retry_after_s},
    )


def unauthorized(detail: str) -> Problem:
    return Problem(
        401, "unauthorized", "Unauthorized", detail, headers={"WWW-Authenticate": "Bearer"}
    )


def forbidden(detail: str) -> Problem:
    return Problem(403, "forbidden", "Forbidden", detail)


def not_found(detail: str) -> Problem:
    return Problem(404, "not-found", "Not found", detail)


def bad_request(slug: str, detail: str, errors: list[dict[str, Any]] | None = None) -> Problem:
    return Problem(400, slug, "Bad request", detail, errors=errors or [])


class ConfigError(Exception):
    """A pack or settings file is wrong; the message names the file, the path and the fault."""
