"""Resolve a presented token to a :class:`Principal`, with a short cache.

Ingest checks a key on every request; the cache keeps that to a dict lookup. A revoked key
stops working within ``key_cache_ttl_s`` (default 5 s). Unknown tokens are cached too, so a
client hammering with a bad key costs no store queries.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import threading
import time

from gristmill.auth.permissions import OPERATOR, Principal
from gristmill.auth.tokens import TokenVerifier, looks_like_jwt
from gristmill.meta.store import MetaStore


def token_from_headers(authorization: str | None) -> str | None:
    """Bearer token, or the user name of HTTP Basic (``writeKey:`` as Segment clients send)."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and value:
        return value
    if scheme == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user = decoded.partition(":")[0]
        return user or None
    return None


class KeyResolver:
    def __init__(
        self,
        store: MetaStore,
        ttl_s: float,
        local_token: str | None = None,
        tokens: TokenVerifier | None = None,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.local_token = local_token
        self.tokens = tokens
        self._cache: dict[str, tuple[float, Principal | None]] = {}
        self._active: dict[str, tuple[float, bool]] = {}
        self._lock = threading.Lock()

    def refusal(self, token: str) -> str | None:
        """Why a presented JWT is refused before verification (over the size limit), or None;
        the caller answers 401 with it."""
        if self.tokens is not None and looks_like_jwt(token):
            return self.tokens.refusal(token)
        return None

    def resolve(self, token: str) -> Principal | None:
        if self.local_token and hmac.compare_digest(token, self.local_token):
            return Principal(kind="local", role=OPERATOR)
        if self.tokens is not None and looks_like_jwt(token):
            return self.tokens.verify(token)
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        key = self.store.lookup_key(token)
        principal: Principal | None = None
        if key is not None and key.active:
            principal = Principal(
                kind=key.kind,
                role="writer" if key.kind == "write" else (key.role or ""),
                key_id=key.key_id,
                pack=key.pack,
                source=key.source,
                claims=key.claims,
            )
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[token] = (now, principal)
        return principal

    def still_valid(self, principal: Principal) -> bool:
        """For principals remembered elsewhere (dashboard sessions): is their key still active?
        Checked with the same TTL as tokens, so a revocation reaches sessions within it."""
        if principal.key_id is None:
            return True
        now = time.monotonic()
        hit = self._active.get(principal.key_id)
        if hit is not None and now - hit[0] < self.ttl_s:
            return hit[1]
        active = self.store.key_active(principal.key_id)
        self._active[principal.key_id] = (now, active)
        return active
