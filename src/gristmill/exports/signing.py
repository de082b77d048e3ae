"""Signed download tokens for exports kept in a local directory.

The S3 destination hands out the store's own presigned URLs; a local directory has no such
server, so Gristmill signs its own: ``<payload>.<hmac>`` where the payload names the job, the
file (``csv`` or ``manifest``) and the expiry (Unix seconds), and the HMAC-SHA256 is keyed by
the install's export key. Changing any byte breaks the HMAC; an expired token is refused
even with a good HMAC. Tokens carry no path: the file is looked up from the job.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

FILES = ("csv", "manifest")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class BadToken(ValueError):
    """Tampered, malformed or expired."""


@dataclass(frozen=True, slots=True)
class Grant:
    job_id: str
    file: str
    expires_at: int


def sign(key: bytes, job_id: str, file: str, expires_at: int) -> str:
    if file not in FILES:
        raise ValueError(file)
    payload = _b64(f"{job_id}|{file}|{expires_at}".encode())
    mac = hmac.new(key, payload.encode(), hashlib.sha256).digest()
    return f"{payload}.{_b64(mac)}"


def verify(key: bytes, token: str, now: int) -> Grant:
    try:
        payload, mac = token.split(".", 1)
        good = hmac.new(key, payload.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(good, _unb64(mac)):
            raise BadToken("the download link was altered")
        job_id, file, exp = _unb64(payload).decode().split("|")
        grant = Grant(job_id, file, int(exp))
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, BadToken):
            raise
        raise BadToken("not a download link this server made") from None
    if grant.file not in FILES:
        raise BadToken("not a download link this server made")
    if now >= grant.expires_at:
        raise BadToken("the download link has expired")
    return grant
