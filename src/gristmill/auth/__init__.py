"""Layer 3: who is calling (principals from keys) and what they may do (one permission table)."""

from gristmill.auth.keys import KeyResolver
from gristmill.auth.permissions import ROLE_PERMISSIONS, Permission, Principal

__all__ = ["ROLE_PERMISSIONS", "KeyResolver", "Permission", "Principal"]
