"""Rate limits per key and per client address on ingest and query: token buckets, 429.

Every limit is a :class:`TokenBucket` (``rate`` tokens a second, at most ``burst`` banked)
holding one bucket per key id / JWT subject / client address. A request takes one token —
limits count **requests, not events**. An empty bucket answers 429 with ``Retry-After``
(whole seconds, rounded up, at least 1) and nothing is read further or written to the log.

Where it hooks in:

* ingest — :func:`gristmill.api.routers.ingest.handle`: the address limit before anything
  else (bad keys are counted too), the key limit as soon as the key is known (the header
  key before the body is read; a key inside the body once it is parsed), always before the
  log append. The 429 is rendered by the dialect, like every other ingest error.
* query — :meth:`RateLimiter.refuse_query`, called by the app before FastAPI's routing for
  GET/HEAD under ``/v1/metrics``, ``/v1/events``, ``/v1/freshness``, pack views,
  ``/api/…`` and ``/analytics/…``. Unauthenticated requests are limited by address only
  (the route answers 401).

Per request that is a dict lookup and a few float operations per limit; no lock. All calls
come from the event loop's thread; a bucket's read-modify-write is not atomic across threads,
which at worst lets a racing request through.
"""

from __future__ import annotations

import base64
import ipaddress
import math
import re
import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from starlette.requests import cookie_parser

from gristmill.auth.keys import token_from_headers
from gristmill.auth.permissions import Principal
from gristmill.auth.sessions import COOKIE
from gristmill.core.errors import PROBLEM_JSON, Problem, problem_bytes, too_many_requests

if TYPE_CHECKING:
    from gristmill.api.metrics import RequestCounters
    from gristmill.config import RateLimitSettings

INGEST = "ingest"
QUERY = "query"
QUERY_PATHS = frozenset({"/v1/metrics", "/v1/events", "/v1/freshness"})
QUERY_PREFIXES = ("/api/", "/analytics/")
QUERY_METHODS = frozenset({"GET", "HEAD"})

Clock = Callable[[], float]


class TokenBucket:
    """One bucket per key; memory bounded by ``max_keys``.

    A bucket refilled to ``burst`` is indistinguishable from no bucket, so when the table
    reaches ``max_keys`` those are dropped first; if more than half remain, the least
    recently used go until half do (so a sweep is paid for by at least ``max_keys / 2``
    new keys)."""

    __slots__ = ("_buckets", "burst", "clock", "max_keys", "rate")

    def __init__(
        self, rate: float, burst: int, *, clock: Clock = time.monotonic, max_keys: int = 100_000
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate = float(rate)
        self.burst = float(burst)
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, list[float]] = {}  # key -> [tokens, last update]

    def take(self, key: str) -> float | None:
        """Take one token: None if there was one, else the seconds until there is."""
        now = self.clock()
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_keys:
                self._evict(now)
            self._buckets[key] = [self.burst - 1.0, now]
            return None
        tokens = b[0] + (now - b[1]) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        b[1] = now
        if tokens >= 1.0:
            b[0] = tokens - 1.0
            return None
        b[0] = tokens
        return (1.0 - tokens) / self.rate

    def __len__(self) -> int:
        return len(self._buckets)

    def _evict(self, now: float) -> None:
        rate, full, half = self.rate, self.burst, self.max_keys // 2
        keep = {k: b for k, b in self._buckets.items() if b[0] + (now - b[1]) * rate < full}
        if len(keep) > half:
            recent = sorted(keep.items(), key=lambda kv: kv[1][1], reverse=True)[:half]
            keep = dict(recent)
        self._buckets = keep


class Limit:
    """A bucket with what a 429 must say about it."""

    __slots__ = ("bucket", "counters", "route_class", "scope")

    def __init__(
        self, scope: str, route_class: str, bucket: TokenBucket, counters: RequestCounters
    ) -> None:
        self.scope = scope
        self.route_class = route_class
        self.bucket = bucket
        self.counters = counters

    def over(self, key: str) -> Problem | None:
        wait = self.bucket.take(key)
        if wait is None:
            return None
        self.counters.limited(self.scope, self.route_class)
        retry = max(1, math.ceil(wait))
        rate, burst = self.bucket.rate, int(self.bucket.burst)
        who = "key" if self.scope == "key" else "client IP address"
        return too_many_requests(
            f"over the {self.route_class} rate limit per {who}: {rate:g} requests/s "
            f"(burst {burst}); retry after {retry} s",
            retry,
            rate_limit={
                "scope": self.scope,
                "route_class": self.route_class,
                "rate_per_s": rate,
                "burst": burst,
            },
        )


def jwt_subject(token: str) -> str | None:
    """``sub`` of a token already verified by the key resolver (so read without checking)."""
    try:
        seg = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))
    except (IndexError, ValueError):
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return None if sub is None else str(sub)


def identity(principal: Principal, token: str | None) -> str | None:
    """What a key limit is counted by: the key id, else the JWT subject (else the token's
    signature), or ``local`` for the operator token."""
    if principal.key_id is not None:
        return principal.key_id
    if principal.kind == "local":
        return "local"
    if principal.kind == "jwt" and token:
        return "jwt:" + (jwt_subject(token) or token.rpartition(".")[2])
    return None


class RateLimiter:
    """The four limits (ingest/query x key/IP) of one app, from ``settings.rate_limits``."""

    def __init__(
        self,
        cfg: RateLimitSettings,
        counters: RequestCounters,
        *,
        resolve: Callable[[str], Principal | None],
        session: Callable[[str], Principal | None],
        query_paths: Collection[str] = (),
        clock: Clock = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.enabled = cfg.enabled
        self.resolve = resolve
        self.session = session
        self.query_paths = QUERY_PATHS | frozenset(p for p in query_paths if "{" not in p)
        # Routes with parameters (``/orgs/{orgId}/usage``) match as patterns.
        self._query_patterns = [
            re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(p)) + "$")
            for p in query_paths
            if "{" in p
        ]
        self.forwarded = cfg.trust_forwarded_for
        self._networks = [ipaddress.ip_network(n, strict=False) for n in cfg.trusted_ips]
        self._trusted: dict[str, bool] = {}

        def limit(scope: str, route_class: str, rate: float, burst: int) -> Limit | None:
            if not cfg.enabled or rate <= 0:
                return None
            bucket = TokenBucket(rate, burst, clock=clock, max_keys=cfg.max_keys)
            return Limit(scope, route_class, bucket, counters)

        self.ingest_key = limit("key", INGEST, cfg.ingest_per_key_rps, cfg.ingest_burst)
        self.ingest_ip = limit("ip", INGEST, cfg.ingest_per_ip_rps, cfg.ingest_per_ip_burst)
        self.query_key = limit("key", QUERY, cfg.query_per_key_rps, cfg.query_burst)
        self.query_ip = limit("ip", QUERY, cfg.query_per_ip_rps, cfg.query_per_ip_burst)

    def use_clock(self, clock: Clock) -> None:
        """Tests: drive every bucket from a fake clock."""
        for lim in (self.ingest_key, self.ingest_ip, self.query_key, self.query_ip):
            if lim is not None:
                lim.bucket.clock = clock

    # -- who is asking ------------------------------------------------------------------

    def address(self, host: str | None, headers: Mapping[str, str]) -> str | None:
        """The client address: the peer, or with ``trust_forwarded_for`` the last
        ``X-Forwarded-For`` entry (the one the proxy in front of us appended)."""
        if self.forwarded:
            xff = headers.get("x-forwarded-for")
            if xff:
                return xff.rpartition(",")[2].strip() or host
        return host

    def trusted(self, ip: str | None) -> bool:
        if ip is None or not self._networks:
            return False
        hit = self._trusted.get(ip)
        if hit is None:
            try:
                addr = ipaddress.ip_address(ip)
                hit = any(addr in net for net in self._networks)
            except ValueError:
                hit = False
            if len(self._trusted) > 10_000:
                self._trusted.clear()
            self._trusted[ip] = hit
        return hit

    # -- ingest -------------------------------------------------------------------------

    def ingest_by_ip(self, ip: str | None) -> Problem | None:
        lim = self.ingest_ip
        return None if lim is None or ip is None else lim.over(ip)

    def ingest_by_key(self, principal: Principal, token: str | None) -> Problem | None:
        lim = self.ingest_key
        if lim is None:
            return None
        key = identity(principal, token)
        return None if key is None else lim.over(key)

    # -- query --------------------------------------------------------------------------

    def is_query(self, scope: Mapping[str, Any]) -> bool:
        if scope["type"] != "http" or scope["method"] not in QUERY_METHODS:
            return False
        path: str = scope["path"]
        if path in self.query_paths or path.startswith(QUERY_PREFIXES):
            return True
        return any(p.match(path) for p in self._query_patterns)

    def check_query(self, scope: Mapping[str, Any]) -> Problem | None:
        """The address limit, then (for a known key, token or session) the key limit."""
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        client = scope.get("client")
        ip = self.address(client[0] if client else None, headers)
        if self.trusted(ip):
            return None
        if self.query_ip is not None and ip is not None:
            p = self.query_ip.over(ip)
            if p is not None:
                return p
        if self.query_key is None:
            return None
        token = token_from_headers(headers.get("authorization"))
        principal: Principal | None = None
        if token is not None:
            principal = self.resolve(token)
        elif "cookie" in headers:
            sid = cookie_parser(headers["cookie"]).get(COOKIE)
            principal = self.session(sid) if sid else None
        key = None if principal is None else identity(principal, token)
        return None if key is None else self.query_key.over(key)

    async def refuse_query(self, scope: Mapping[str, Any], send: Any) -> bool:
        """Answer 429 for a query request over a limit; False (nothing sent) otherwise."""
        if not self.enabled or not self.is_query(scope):
            return False
        p = self.check_query(scope)
        if p is None:
            return False
        body = problem_bytes(p)
        headers = [
            (b"content-type", PROBLEM_JSON.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
        headers += [(k.lower().encode(), v.encode()) for k, v in p.headers.items()]
        await send({"type": "http.response.start", "status": p.status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True
