"""JWT bearer tokens: HS256 with a shared secret or RS256/ES256 keys from a JWKS file."""

from __future__ import annotations

import json
from typing import Any

import jwt

from gristmill.auth.permissions import ROLE_PERMISSIONS, Principal
from gristmill.config import JWTSettings


def looks_like_jwt(token: str) -> bool:
    return token.count(".") == 2 and token.startswith("eyJ")


def _dig(claims: dict[str, Any], path: str) -> Any:
    if path in claims:
        return claims[path]
    cur: Any = claims
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


class TokenVerifier:
    def __init__(self, cfg: JWTSettings, default_pack: str | None) -> None:
        self.cfg = cfg
        self.default_pack = cfg.default_pack or default_pack
        self._jwks: jwt.PyJWKSet | None = None
        if cfg.jwks_file is not None:
            self._jwks = jwt.PyJWKSet.from_dict(json.loads(cfg.jwks_file.read_text()))

    def _key(self, token: str) -> tuple[Any, list[str]]:
        header = jwt.get_unverified_header(token)
        alg = header.get("alg")
        if alg == "HS256" and self.cfg.hs256_secret is not None:
            return self.cfg.hs256_secret.get_secret_value(), ["HS256"]
        if alg in ("RS256", "ES256") and self._jwks is not None:
            kid = header.get("kid")
            for k in self._jwks.keys:
                if kid is None or k.key_id == kid:
                    return k.key, [str(alg)]
        raise jwt.InvalidTokenError(f"no key for alg {alg!r}")

    def refusal(self, token: str) -> str | None:
        """Why a token is refused without being looked at (its size), or None."""
        size = len(token.encode())
        if size > self.cfg.max_bytes:
            limit = self.cfg.max_bytes
            return f"the token is {size} bytes, over the limit of {limit} (auth.jwt.max_bytes)"
        return None

    def verify(self, token: str) -> Principal | None:
        """The principal a valid token names, or None (bad signature, expired, wrong audience,
        over the size limit — checked first, before any parsing)."""
        if self.refusal(token) is not None:
            return None
        try:
            key, algs = self._key(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=algs,
                audience=self.cfg.audience,
                issuer=self.cfg.issuer,
                leeway=self.cfg.leeway_s,
                options={"require": ["exp"], "verify_aud": self.cfg.audience is not None},
            )
        except jwt.PyJWTError:
            return None
        role = _dig(claims, self.cfg.role_claim)
        pack = _dig(claims, self.cfg.pack_claim) if self.cfg.pack_claim else self.default_pack
        if not isinstance(role, str) or not isinstance(pack, str):
            return None
        if role in ROLE_PERMISSIONS:
            return None  # operator / writer are Gristmill's own; a token names a pack role
        mapped = {ours: _dig(claims, theirs) for ours, theirs in self.cfg.claim_map.items()}
        return Principal(
            kind="jwt",
            role=role,
            pack=pack,
            claims={k: str(v) for k, v in mapped.items() if v is not None},
        )
