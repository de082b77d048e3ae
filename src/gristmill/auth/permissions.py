"""One role -> permission table. Handlers declare the permission they need; nothing else checks.

``operator`` is Gristmill's own role (pipeline operations across packs). Pack roles (``admin``,
``vendor`` …) come from each pack's ``roles`` with the permissions listed there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gristmill.core.permissions import Permission

OPERATOR = "operator"

ROLE_PERMISSIONS: dict[str, frozenset[Permission]] = {
    OPERATOR: frozenset(set(Permission) - {Permission.INGEST}),
    "writer": frozenset({Permission.INGEST}),
}
"""Built-in roles, valid in every pack: the ``operator`` runs the pipeline and reads all
data unscoped; a write key is a ``writer`` bound to one pack and source. Pack roles are added
to the same table at start (see :class:`gristmill.auth.roles.RoleTable`)."""


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str
    """``write`` key, ``secret`` key, ``jwt`` or ``local`` operator token."""
    role: str
    key_id: str | None = None
    pack: str | None = None
    source: str | None = None
    claims: dict[str, Any] = field(default_factory=dict)
