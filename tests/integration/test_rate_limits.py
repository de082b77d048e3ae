"""Rate limits per key and per client address on ingest and query: token buckets driven by a
fake clock, 429 problem+json with Retry-After, nothing written when refused, counted in
``/metrics``."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from gristmill.api.app import create_app
from gristmill.api.ratelimit import RateLimiter, TokenBucket
from gristmill.runtime import Runtime
from tests.conftest import make_settings
from tests.factories import order

SMALL = {"rps": 5, "burst": 5}


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Env:
    def __init__(self, rt: Runtime, app: FastAPI, clock: FakeClock) -> None:
        self.rt = rt
        self.app = app
        self.clock = clock

    def client(self, host: str = "testclient") -> TestClient:
        return TestClient(self.app, client=(host, 50000))

    def key(self, name: str) -> str:
        return self.rt.meta.create_key("write", name, pack="marketplace", source=name)[1]

    def operator(self, name: str = "ops") -> str:
        return self.rt.meta.create_key("secret", name, role="operator")[1]

    def received(self) -> int:
        return self.rt.conservation().total("received")

    def limited(self) -> dict[tuple[str, str], int]:
        return dict(self.app.state.counters.rate_limited)


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[Any]:
    made: list[Runtime] = []

    def make(**limits: Any) -> Env:
        settings = make_settings(
            tmp_path / f"d{len(made)}",
            rate_limits=limits,
            server={"metrics_allow": ["*"]},
        )
        rt = Runtime(settings)
        made.append(rt)
        app = create_app(rt, start=False)
        clock = FakeClock()
        app.state.ratelimiter.use_clock(clock)
        return Env(rt, app, clock)

    yield make
    for rt in made:
        rt.stop()


def post(c: TestClient, key: str, **headers: str) -> Any:
    return c.post(
        "/v1/events",
        content=orjson.dumps([order()]),
        headers={"Authorization": f"Bearer {key}", **headers},
    )


def key_limits(**extra: Any) -> dict[str, Any]:
    return {"ingest_per_key_rps": 5, "ingest_burst": 5, **extra}


def test_sixth_request_of_a_key_is_429_and_writes_nothing(make_env: Any) -> None:
    env = make_env(**key_limits())
    a, b = env.key("a"), env.key("b")
    with env.client() as c:
        assert [post(c, a).status_code for _ in range(5)] == [200] * 5
        assert env.received() == 5
        r = post(c, a)
        assert r.status_code == 429
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["retry-after"] == "1"  # one token at 5/s: 0.2 s, rounded up
        body = r.json()
        assert body["type"] == "https://gristmill.dev/problems/rate-limited"
        assert body["status"] == 429
        assert body["detail"] == (
            "over the ingest rate limit per key: 5 requests/s (burst 5); retry after 1 s"
        )
        assert body["rate_limit"] == {
            "scope": "key",
            "route_class": "ingest",
            "rate_per_s": 5.0,
            "burst": 5,
        }
        assert body["retry_after_seconds"] == 1
        assert env.received() == 5  # the refused request wrote nothing to the log
        # another key from the same address is not affected
        assert [post(c, b).status_code for _ in range(5)] == [200] * 5
        assert post(c, b).status_code == 429
        assert env.received() == 10
        # after Retry-After seconds the bucket holds 5 tokens again: 5 served, the 6th not
        env.clock.advance(int(r.headers["retry-after"]))
        assert [post(c, a).status_code for _ in range(6)] == [200] * 5 + [429]
        assert env.received() == 15
        env.rt.loader.drain()
        cons = env.rt.conservation()
        assert cons.balanced
        assert cons.total("loaded") == 15
    assert env.limited() == {
        ("key", "ingest"): 3,
        ("ip", "ingest"): 0,
        ("key", "query"): 0,
        ("ip", "query"): 0,
    }
    assert env.app.state.counters.rejected_requests["rate-limited"] == 3
    assert env.app.state.counters.requests[("/v1/events", 429)] == 3


def test_per_ip_limit_catches_two_keys_from_one_address(make_env: Any) -> None:
    env = make_env(ingest_per_ip_rps=5, ingest_per_ip_burst=5)
    a, b = env.key("a"), env.key("b")
    with env.client("10.0.0.1") as c, env.client("10.0.0.2") as other:
        assert [post(c, a).status_code for _ in range(3)] == [200] * 3
        assert [post(c, b).status_code for _ in range(2)] == [200] * 2
        r = post(c, b)
        assert r.status_code == 429
        assert r.json()["rate_limit"]["scope"] == "ip"
        assert r.json()["detail"] == (
            "over the ingest rate limit per client IP address: 5 requests/s (burst 5); "
            "retry after 1 s"
        )
        assert post(c, a).status_code == 429
        # X-Forwarded-For is not trusted unless configured
        assert post(c, a, **{"X-Forwarded-For": "192.0.2.9"}).status_code == 429
        # bad keys spend the address's tokens too (the limit runs before authentication)
        assert post(c, "nope").status_code == 429
        assert post(other, a).status_code == 200
        assert post(other, "nope").status_code == 401
        assert env.received() == 6
    assert env.limited()[("ip", "ingest")] == 4
    assert env.limited()[("key", "ingest")] == 0


def test_forwarded_for_when_trusted_and_trusted_ips_exempt(make_env: Any) -> None:
    env = make_env(
        ingest_per_ip_rps=1,
        ingest_per_ip_burst=1,
        trust_forwarded_for=True,
        trusted_ips=["10.9.0.0/16"],
    )
    a = env.key("a")
    with env.client("10.0.0.1") as c:
        assert post(c, a, **{"X-Forwarded-For": "1.1.1.1, 192.0.2.1"}).status_code == 200
        assert post(c, a, **{"X-Forwarded-For": "1.1.1.1, 192.0.2.1"}).status_code == 429
        # the last entry (the one our proxy appended) counts, not what the client wrote first
        assert post(c, a, **{"X-Forwarded-For": "192.0.2.1, 192.0.2.2"}).status_code == 200
        assert post(c, a).status_code == 200  # no header: the peer itself
        assert post(c, a).status_code == 429
        for _ in range(5):
            assert post(c, a, **{"X-Forwarded-For": "10.9.3.4"}).status_code == 200
    assert env.limited()[("ip", "ingest")] == 2


def test_dialects_answer_429_in_their_own_shape(make_env: Any) -> None:
    env = make_env(**key_limits(ingest_burst=1, ingest_per_key_rps=0.25))
    a = env.key("a")
    basic = {"Authorization": "Basic " + base64.b64encode(f"{a}:".encode()).decode()}
    msg = {"type": "track", "event": "Order Completed", "messageId": "m-1", "userId": "u"}
    with env.client() as c:
        assert c.post("/v1/track", json=msg, headers=basic).status_code == 200
        r = c.post("/v1/track", json=msg, headers=basic)
        assert r.status_code == 429
        assert r.headers["retry-after"] == "4"  # one token at 0.25/s
        # problem+json that also carries Segment's own {code, message}
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["code"] == "rate-limited"
        assert body["message"] == (
            "over the ingest rate limit per key: 0.25 requests/s (burst 1); retry after 4 s"
        )
        assert body["detail"] == body["message"]
        assert body["retry_after_seconds"] == 4
        # the key inside the body (no header) is limited once the body is parsed
        r = c.post("/v1/batch", json={"batch": [msg], "writeKey": a})
        assert r.status_code == 429
        assert r.json()["code"] == "rate-limited"
        r = c.post("/capture/", json={"api_key": a, "event": "x", "distinct_id": "u"})
        assert r.status_code == 429
        assert r.json()["code"] == "rate-limited"
        env.clock.advance(3.9)
        assert c.post("/v1/track", json=msg, headers=basic).status_code == 429
        env.clock.advance(4.0)
        assert c.post("/v1/track", json=msg, headers=basic).status_code == 200
    assert env.limited()[("key", "ingest")] == 4


def test_query_endpoints_are_limited_per_key_and_per_ip(make_env: Any) -> None:
    env = make_env(query_per_key_rps=5, query_burst=5, query_per_ip_rps=8, query_per_ip_burst=8)
    ops, ops2 = env.operator("ops"), env.operator("ops2")
    h, h2 = {"Authorization": f"Bearer {ops}"}, {"Authorization": f"Bearer {ops2}"}
    with env.client() as c:
        codes = [c.get("/v1/freshness", headers=h).status_code for _ in range(5)]
        assert codes == [200] * 5
        r = c.get("/v1/metrics", params={"metrics": "orders"}, headers=h)  # same bucket
        assert r.status_code == 429
        assert r.headers["retry-after"] == "1"
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["detail"] == (
            "over the query rate limit per key: 5 requests/s (burst 5); retry after 1 s"
        )
        assert c.get("/v1/events", headers=h).status_code == 429
        assert c.get("/api/v1/admin/analytics", headers=h).status_code == 429  # a pack view
        # operations endpoints are not query endpoints
        assert c.get("/v1/pipeline/stats", headers=h).status_code == 200
        # a second key has its own bucket, but the address has only 8 tokens: 8 spent so
        # far (5 served + 3 refused by the key limit after the address let them in)
        r = c.get("/v1/freshness", headers=h2)
        assert r.status_code == 429
        assert r.json()["rate_limit"]["scope"] == "ip"
        env.clock.advance(1.0)  # +8 address tokens, +5 key tokens
        assert c.get("/v1/freshness", headers=h2).status_code == 200
        # unauthenticated: limited by address only, otherwise the route answers 401
        assert c.get("/v1/freshness").status_code == 401
    with env.client("10.0.0.7") as other:
        assert other.get("/v1/freshness", headers=h2).status_code == 200
    assert env.limited() == {
        ("key", "ingest"): 0,
        ("ip", "ingest"): 0,
        ("key", "query"): 3,
        ("ip", "query"): 1,
    }


def test_metrics_show_the_counter(make_env: Any) -> None:
    env = make_env(**key_limits(), query_per_ip_rps=1, query_per_ip_burst=1)
    a, ops = env.key("a"), env.operator()
    with env.client() as c:
        for _ in range(7):
            post(c, a)
        c.get("/v1/freshness", headers={"Authorization": f"Bearer {ops}"})
        c.get("/v1/freshness", headers={"Authorization": f"Bearer {ops}"})
        text = c.get("/metrics").text
    lines = {ln for ln in text.splitlines() if ln.startswith("gristmill_rate_limited_total")}
    assert lines == {
        'gristmill_rate_limited_total{route_class="ingest",scope="key"} 2.0',
        'gristmill_rate_limited_total{route_class="query",scope="key"} 0.0',
        'gristmill_rate_limited_total{route_class="ingest",scope="ip"} 0.0',
        'gristmill_rate_limited_total{route_class="query",scope="ip"} 1.0',
    }
    assert 'gristmill_requests_rejected_total{reason="rate-limited"} 2.0' in text


def test_disabled_never_limits(make_env: Any) -> None:
    env = make_env(
        enabled=False,
        ingest_per_key_rps=1,
        ingest_burst=1,
        ingest_per_ip_rps=1,
        ingest_per_ip_burst=1,
        query_per_key_rps=1,
        query_burst=1,
        query_per_ip_rps=1,
        query_per_ip_burst=1,
    )
    a, ops = env.key("a"), env.operator()
    assert env.app.state.ratelimiter.enabled is False
    with env.client() as c:
        assert [post(c, a).status_code for _ in range(20)] == [200] * 20
        h = {"Authorization": f"Bearer {ops}"}
        assert [c.get("/v1/freshness", headers=h).status_code for _ in range(20)] == [200] * 20
    assert env.received() == 20
    assert sum(env.limited().values()) == 0


def test_defaults_do_not_limit_a_busy_single_key(make_env: Any) -> None:
    env = make_env()
    cfg = env.rt.settings.rate_limits
    assert cfg.enabled
    assert cfg.trusted_ips == []
    assert (cfg.ingest_per_key_rps, cfg.ingest_burst) == (20_000, 40_000)
    assert (cfg.ingest_per_ip_rps, cfg.ingest_per_ip_burst) == (50_000, 100_000)
    a = env.key("a")
    with env.client("127.0.0.1") as c:
        assert all(post(c, a).status_code == 200 for _ in range(300))
    assert sum(env.limited().values()) == 0


def test_bucket_retry_after_and_bounded_memory() -> None:
    clock = FakeClock()
    b = TokenBucket(0.5, 2, clock=clock, max_keys=100)
    assert b.take("k") is None
    assert b.take("k") is None
    assert b.take("k") == pytest.approx(2.0)
    clock.advance(1.0)
    assert b.take("k") == pytest.approx(1.0)  # half a token banked; a refusal takes nothing
    clock.advance(1.0)
    assert b.take("k") is None
    # 99 more keys fill the table; the 101st sweeps: refilled buckets go first
    for i in range(99):
        b.take(f"x{i}")
    assert len(b) == 100
    clock.advance(10.0)  # everyone refilled
    b.take("k")
    b.take("new")
    assert len(b) == 2  # only "k" (just used, not full) and "new"
    # all busy: the least recently used half goes
    for i in range(120):
        clock.advance(0.001)
        b.take(f"y{i}")
    assert len(b) <= 100


def test_check_cost_is_small(make_env: Any) -> None:
    """The per-request work on the ingest path: address + key buckets (a printed figure)."""
    env = make_env()
    lim: RateLimiter = env.app.state.ratelimiter
    lim.use_clock(time.monotonic)
    p = env.rt.keys.resolve(env.key("a"))
    assert p is not None
    n = 20_000
    t0 = time.perf_counter()
    for _ in range(n):
        ip = lim.address("203.0.113.5", {})
        lim.trusted(ip)
        lim.ingest_by_ip(ip)
        lim.ingest_by_key(p, None)
    per_call_us = (time.perf_counter() - t0) / n * 1e6
    print(f"rate-limit check: {per_call_us:.2f} us per request")
    assert per_call_us < 50  # generous: shared CI machines


def test_identity_is_key_id_jwt_subject_or_local() -> None:
    import jwt

    from gristmill.api.ratelimit import identity
    from gristmill.auth.permissions import Principal

    token = jwt.encode({"sub": "user-7", "exp": 2_000_000_000}, "s" * 32, algorithm="HS256")
    other = jwt.encode({"sub": "user-7", "exp": 2_000_000_001}, "s" * 32, algorithm="HS256")
    anon = jwt.encode({"exp": 2_000_000_000}, "s" * 32, algorithm="HS256")
    assert identity(Principal(kind="write", role="writer", key_id="k1"), None) == "k1"
    assert identity(Principal(kind="local", role="operator"), "tok") == "local"
    jwt_p = Principal(kind="jwt", role="vendor")
    assert identity(jwt_p, token) == identity(jwt_p, other) == "jwt:user-7"  # one subject
    assert identity(jwt_p, anon) == "jwt:" + anon.rpartition(".")[2]
