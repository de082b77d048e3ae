"""Fast JSON and problem+json responses (orjson; no pydantic on the ingest path)."""

from __future__ import annotations

from typing import Any

import orjson
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
