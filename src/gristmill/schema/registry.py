"""Schema registry: version resolution and compiled JSON Schema 2020-12 validators.

Validators are compiled once per pack load (jsonschema-rs, about a microsecond per small event).
The fast path asks only ``is_valid``; the error walk runs just for rejected events.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from gristmill.core.envelope import Reason
from gristmill.pack.models import Pack

MAX_ERRORS = 10


@dataclass(frozen=True, slots=True)
class Verdict:
    """Outcome of validating one event's properties."""

    version: int
    reason: Reason | None = None
    detail: str = ""
    errors: tuple[dict[str, Any], ...] = ()

    @property
    def ok(self) -> bool:
        return self.reason is None


class SchemaRegistry:
    def __init__(self, pack: Pack) -> None:
        self.pack = pack
        self._validators: dict[tuple[str, int], jsonschema_rs.Validator] = {}
        self._latest: dict[str, int] = {}
        self._ok: dict[int, Verdict] = {}
        for et, versions in pack.schemas.items():
            for version, doc in versions.items():
                self._validators[(et, version)] = jsonschema_rs.validator_for(doc)
                self._ok[version] = Verdict(version)
            self._latest[et] = pack.latest_version(et)

    def knows(self, event_type: str) -> bool:
        return event_type in self._latest

    def latest(self, event_type: str) -> int | None:
        """The newest version of an event type (None when the pack does not declare it)."""
        return self._latest.get(event_type)

    def validate(self, event_type: str, version: int | None, properties: Any) -> Verdict:
        """Check against ``version``; ``None`` means the newest. The collector passes the
        source's pinned version instead of ``None`` (:mod:`gristmill.collect.pins`)."""
        latest = self._latest.get(event_type)
        if latest is None:
            return Verdict(
                0,
                Reason.UNKNOWN_EVENT_TYPE,
                f"event type {event_type!r} is not declared in pack {self.pack.name!r}",
            )
        v = latest if version is None else version
        validator = self._validators.get((event_type, v))
        if validator is None:
            known = sorted(vv for (et, vv) in self._validators if et == event_type)
            return Verdict(
                v,
                Reason.UNKNOWN_SCHEMA_VERSION,
                f"{event_type!r} has no schema version {v} (known: {known})",
            )
        if validator.is_valid(properties):
            return self._ok[v]  # shared, immutable: no allocation on the hot path
        errors = []
        for err in validator.iter_errors(properties):
            errors.append(
                {
                    "path": "/properties" + "".join(f"/{p}" for p in err.instance_path),
                    "message": err.message,
                }
            )
            if len(errors) >= MAX_ERRORS:
                break
        return Verdict(
            v,
            Reason.SCHEMA_VIOLATION,
            f"properties do not match {event_type} v{v}: {errors[0]['message']}",
            tuple(errors),
        )
