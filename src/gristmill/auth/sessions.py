"""Dashboard sign-in sessions: an opaque cookie mapped to a principal, in memory.

The cookie never holds the key itself; a restart signs everyone out, which is acceptable for
the embedded dashboard. Sessions authenticate GET requests only (no CSRF surface).
"""

from __future__ import annotations

import secrets
import threading
import time

from gristmill.auth.permissions import Principal

COOKIE = "gm_session"


class SessionStore:
    def __init__(self, ttl_s: int) -> None:
        self.ttl_s = ttl_s
        self._sessions: dict[str, tuple[float, Principal]] = {}
        self._lock = threading.Lock()

    def create(self, principal: Principal) -> str:
        sid = secrets.token_urlsafe(32)
        with self._lock:
            now = time.monotonic()
            for k in [k for k, (t, _) in self._sessions.items() if t < now]:
                del self._sessions[k]
            self._sessions[sid] = (now + self.ttl_s, principal)
        return sid

    def get(self, sid: str) -> Principal | None:
        """The session's principal (callers must still check its key is active)."""
        if sid.startswith("once-"):
            return None  # a one-time link is not a session
        with self._lock:
            hit = self._sessions.get(sid)
            if hit is None or hit[0] < time.monotonic():
                self._sessions.pop(sid, None)
                return None
            return hit[1]

    def create_once(self, principal: Principal, ttl_s: int = 600) -> str:
        """A one-time sign-in link token (the demo prints one); it works once, for 10 min."""
        nonce = "once-" + secrets.token_urlsafe(24)
        with self._lock:
            self._sessions[nonce] = (time.monotonic() + ttl_s, principal)
        return nonce

    def redeem(self, nonce: str) -> Principal | None:
        if not nonce.startswith("once-"):
            return None
        with self._lock:
            hit = self._sessions.pop(nonce, None)
        return hit[1] if hit and hit[0] >= time.monotonic() else None

    def drop(self, sid: str) -> None:
        with self._lock:
            self._sessions.pop(sid, None)
