"""One role -> permission table. Handlers declare the permission they need; nothing else checks.

``operator`` is Gristmill's own role (pipeline operations across packs). Pack roles (``admin``,
``vendor`` …) come from each pack and gain analytics permissions when views arrive.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Permission(StrEnum):
    INGEST = "ingest"
    PIPELINE_READ = "pipeline:read"
    QUARANTINE_READ = "quarantine:read"
    QUARANTINE_REPLAY = "quarantine:replay"


OPERATOR = "operator"

ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    OPERATOR: frozenset(
        {
            Permission.PIPELINE_READ,
            Permission.QUARANTINE_READ,
            Permission.QUARANTINE_REPLAY,
        }
    ),
    "writer": frozenset({Permission.INGEST}),
}
"""Built-in roles. A write key is a ``writer`` bound to one pack and source."""


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str
    """``write`` key, ``secret`` key or ``local`` operator token."""
    role: str
    key_id: str | None = None
    pack: str | None = None
    source: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def permissions(self) -> frozenset[Permission]:
        return ROLE_PERMISSIONS.get(self.role, frozenset())

    def can(self, perm: Permission) -> bool:
        return perm in self.permissions
