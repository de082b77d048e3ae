"""Layer 3: who is calling (principals from keys) and what they may do (one permission table)."""

from gristmill.auth.keys import KeyResolver
from gristmill.auth.permissions import ROLE_PERMISSIONS, Principal
from gristmill.auth.roles import RoleTable
from gristmill.core.permissions import Permission

__all__ = ["ROLE_PERMISSIONS", "KeyResolver", "Permission", "Principal", "RoleTable"]
