"""The one role -> permission table, and the row scope each role carries.

Built-in roles (``operator``, ``writer``) and each pack's roles are merged at start into a
single table keyed by (pack, role): the same role name in two packs are two roles.
"""

from __future__ import annotations

from collections.abc import Mapping

from gristmill.auth.permissions import OPERATOR, ROLE_PERMISSIONS, Principal
from gristmill.core.errors import forbidden
from gristmill.core.permissions import Permission
from gristmill.metrics.model import Condition
from gristmill.pack.models import Pack


class RoleTable:
    def __init__(self, packs: Mapping[str, Pack]) -> None:
        self.packs = dict(packs)
        self._perms: dict[tuple[str | None, str], frozenset[Permission]] = {
            (None, role): perms for role, perms in ROLE_PERMISSIONS.items()
        }
        for pack in packs.values():
            for role, spec in pack.spec.roles.items():
                self._perms[(pack.name, role)] = frozenset(Permission(p) for p in spec.permissions)

    def permissions(self, p: Principal) -> frozenset[Permission]:
        key = (None, p.role) if p.role in ROLE_PERMISSIONS else (p.pack, p.role)
        return self._perms.get(key, frozenset())

    def allows(self, p: Principal, perm: Permission) -> bool:
        return perm in self.permissions(p)

    def pack_for(self, p: Principal, requested: str | None) -> Pack:
        """The pack a data request is about: the caller's own, or any for the operator."""
        if p.pack is not None:
            if requested not in (None, p.pack):
                raise forbidden(f"this key is for pack {p.pack!r}")
            return self.packs[p.pack]
        if requested is None:
            if len(self.packs) != 1:
                raise forbidden(f"name a pack: {', '.join(self.packs)}")
            return next(iter(self.packs.values()))
        if requested not in self.packs:
            raise forbidden(f"unknown pack {requested[:64]!r}")
        return self.packs[requested]

    def scope(
        self,
        p: Principal,
        pack: Pack,
        extra: Mapping[str, str] | None = None,
    ) -> tuple[Condition, ...]:
        """Row conditions from the caller's claims: the role's scope plus ``extra`` (a view's).

        A scoped role whose key or token lacks the claim gets nothing (403), never everything.
        """
        if p.role == OPERATOR:
            return ()
        role = pack.spec.roles.get(p.role)
        binding = dict(role.scope) if role else {}
        binding.update(extra or {})
        out = []
        for column, claim in binding.items():
            value = p.claims.get(claim)
            if value is None or value == "":
                raise forbidden(f"role {p.role!r} needs claim {claim!r}")
            out.append(Condition(column, "eq", str(value)))
        return tuple(out)
