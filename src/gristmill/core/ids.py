"""Identifiers and secrets."""

from __future__ import annotations

import hashlib
import secrets


def new_token(prefix: str, nbytes: int = 24) -> str:
    """A random credential such as ``gmw_…`` (write key) or ``gms_…`` (secret key)."""
    return f"{prefix}_{secrets.token_urlsafe(nbytes)}"


def hash_token(token: str) -> str:
    """Hash a credential for storage.

    SHA-256 without a salt is right here: tokens carry 192 random bits, so there is nothing
    for a slow password hash to protect, and ingest checks a key on every request.
    """
    return hashlib.sha256(token.encode()).hexdigest()
