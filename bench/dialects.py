"""Issue 4 figures: collector throughput per dialect (events/s in 100-event batches, and
requests/s of single-event requests), beside the native endpoint, in one server and one run.

Measured to acknowledgement (every event durable in the log), since the collectors are what
differ between dialects; the loader behind them is the same.
"""

from __future__ import annotations

import base64
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.common import PACKS, blast, serve
from gristmill.api.routers.ingest import ROUTES
from gristmill.collect.service import Parser
from gristmill.config import LimitSettings
from gristmill.pack.loader import load_pack

Encoder = Callable[[list[dict[str, Any]], str], bytes]


def _order(i: int) -> dict[str, Any]:
    return {
        "order_id": f"o-{i}",
        "store_id": f"s-{i % 97}",
        "vendor_store_id": f"v-{i % 13}",
        "amount_cents": 1000 + i % 5000,
    }


def native(evs: list[dict[str, Any]], key: str) -> bytes:
    return orjson.dumps(
        [
            {
                "event_id": e["id"],
                "event_type": "order_created",
                "schema_version": 1,
                "occurred_at": e["ts"],
                "properties": e["p"],
            }
            for e in evs
        ]
    )


def segment(evs: list[dict[str, Any]], key: str) -> bytes:
    return orjson.dumps(
        {
            "batch": [
                {
                    "type": "track",
                    "event": "Order Created",
                    "messageId": e["id"],
                    "userId": "u",
                    "timestamp": e["ts"],
                    "properties": {
                        "orderId": e["p"]["order_id"],
                        "buyerStoreId": e["p"]["store_id"],
                        "vendorStoreId": e["p"]["vendor_store_id"],
                        "amountCents": e["p"]["amount_cents"],
                    },
                }
                for e in evs
            ],
            "sentAt": evs[-1]["ts"],
            "writeKey": key,
        }
    )


def posthog(evs: list[dict[str, Any]], key: str) -> bytes:
    return orjson.dumps(
        {
            "api_key": key,
            "sent_at": evs[-1]["ts"],
            "batch": [
                {
                    "event": "order created",
                    "uuid": e["id"],
                    "distinct_id": "u",
                    "timestamp": e["ts"],
                    "properties": e["p"],
                }
                for e in evs
            ],
        }
    )


def snowplow(evs: list[dict[str, Any]], key: str) -> bytes:
    def ue(p: dict[str, Any]) -> str:
        return orjson.dumps(
            {
                "schema": "iglu:com.snowplowanalytics.snowplow/unstruct_event/jsonschema/1-0-0",
                "data": {
                    "schema": "iglu:com.marketplace/order_created/jsonschema/1-0-0",
                    "data": p,
                },
            }
        ).decode()

    return orjson.dumps(
        {
            "schema": "iglu:com.snowplowanalytics.snowplow/payload_data/jsonschema/1-0-4",
            "data": [
                {
                    "e": "ue",
                    "eid": e["id"],
                    "aid": key,
                    "p": "srv",
                    "tv": "py-1",
                    "dtm": str(e["ms"]),
                    "stm": str(e["ms"]),
                    "ue_pr": ue(e["p"]),
                }
                for e in evs
            ],
        }
    )


def cloudevents(evs: list[dict[str, Any]], key: str) -> bytes:
    return orjson.dumps(
        [
            {
                "specversion": "1.0",
                "id": e["id"],
                "source": "//bench",
                "type": "com.marketplace.order.created",
                "time": e["ts"],
                "data": e["p"],
            }
            for e in evs
        ]
    )


DIALECTS: dict[str, tuple[str, Callable[[str], dict[str, str]], Encoder]] = {
    "native": ("/v1/events", lambda k: {"Authorization": f"Bearer {k}"}, native),
    "segment": (
        "/v1/batch",
        lambda k: {"Authorization": "Basic " + base64.b64encode(f"{k}:".encode()).decode()},
        segment,
    ),
    "posthog_v0": ("/batch/", lambda k: {}, posthog),
    "snowplow": ("/com.snowplowanalytics.snowplow/tp2", lambda k: {}, snowplow),
    "cloudevents": (
        "/api/v1/events",
        lambda k: {
            "Authorization": f"Bearer {k}",
            "Content-Type": "application/cloudevents-batch+json",
        },
        cloudevents,
    ),
}


def _events(prefix: str, n: int) -> list[dict[str, Any]]:
    now_ms = int(time.time() * 1000)
    out = []
    for i in range(n):
        ms = now_ms - (n - i)
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
        out.append({"id": f"{prefix}-{i}", "ms": ms, "ts": ts, "p": _order(i)})
    return out


# Event ids are unique per request: wrk's threads each load the script, seeded alike in the
# same second, so the thread number (set in setup) is part of every id; without it the two
# threads sent the same ids and half the events were duplicates (dropped by the loader).
LUA = """
counter = 0
tid = 0
math.randomseed(os.time())
local prefix = tostring(math.random(1, 1000000000))
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local template = [==[__BODY__]==]
local headers = __HEADERS__
request = function()
  counter = counter + 1
  local body = string.gsub(template, "__ID__", prefix .. "-" .. tid .. "-" .. counter)
  return wrk.format("POST", "__PATH__", headers, body)
end
"""


def wrk_script(tmp: Path, path: str, headers: dict[str, str], body: bytes) -> Path:
    """The :data:`LUA` script posting ``body`` (its ``__ID__`` made unique per request)."""
    lua_headers = "{" + ", ".join(f'["{k}"]="{v}"' for k, v in headers.items()) + "}"
    script = tmp / "single.lua"
    script.write_text(
        LUA.replace("__BODY__", body.decode())
        .replace("__HEADERS__", lua_headers)
        .replace("__PATH__", path)
    )
    return script


def _wrk_single(
    url: str, path: str, headers: dict[str, str], body: bytes, tmp: Path, seconds: int = 8
) -> float | None:
    """Requests/s of single-event requests with wrk (a C load generator: the client costs
    next to nothing, so the figure is the server's). None when wrk is not installed."""
    if shutil.which("wrk") is None:
        return None
    script = wrk_script(tmp, path, headers, body)
    out = subprocess.run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


def parse_rates(n: int = 20_000) -> dict[str, tuple[int, float]]:
    """Bytes per event on the wire and events/s through the collector alone (decompress,
    split, map, validate, frame: no HTTP, no log), in this process."""
    pack = load_pack(PACKS / "marketplace")
    parser = Parser({"marketplace": pack}, LimitSettings())
    out: dict[str, tuple[int, float]] = {}
    for name, (path, headers, encode) in DIALECTS.items():
        dialect = ROUTES[("POST", path)].dialect
        ctype = headers("gmw_bench").get("Content-Type", "application/json")
        body = encode(_events(f"{name}-p", 100), "gmw_bench")
        t0 = time.perf_counter()
        for _ in range(n // 100):
            p = parser.prepare(
                pack="marketplace", source="bench", dialect=dialect, raw=body, content_type=ctype
            )
            assert p.problem is None
            assert p.outcome is not None
            assert p.outcome.rejected == 0
        out[name] = (len(body) // 100, n / (time.perf_counter() - t0))
    return out


def run(batched: int = 100_000, singles: int = 10_000, rounds: int = 3) -> dict[str, Any]:
    """Batched rates are the median of ``rounds`` runs, the dialects interleaved so that drift
    on a shared machine does not favour one of them."""
    rates: dict[str, list[float]] = {name: [] for name in DIALECTS}
    statuses: dict[str, dict[int, int]] = {name: {} for name in DIALECTS}
    results: dict[str, Any] = {}
    parsed = parse_rates()
    with tempfile.TemporaryDirectory() as tmp:
        s = serve(Path(tmp), env={"GRISTMILL_LOG__MAX_BYTES": str(8 << 30)})
        try:
            for rnd in range(rounds):
                for name, (path, headers, encode) in DIALECTS.items():
                    h = {"Content-Type": "application/json", **headers(s.write_key)}
                    evs = _events(f"{name}-{rnd}-b", batched)
                    bodies = [encode(evs[i : i + 100], s.write_key) for i in range(0, batched, 100)]
                    # Each measurement starts with the loader idle: otherwise the backlog of
                    # the dialect measured before shares the two cores with this one.
                    s.wait_loaded(timeout_s=900)
                    t0 = time.perf_counter()
                    st = blast(s.server.port, s.write_key, bodies, 2, 16, path, h)
                    rates[name].append(batched / (time.perf_counter() - t0))
                    for code, n in st.items():
                        statuses[name][code] = statuses[name].get(code, 0) + n
            for name, (path, headers, encode) in DIALECTS.items():
                h = {"Content-Type": "application/json", **headers(s.write_key)}
                template = encode([{**_events("x", 1)[0], "id": "__ID__"}], s.write_key)
                s.wait_loaded(timeout_s=900)
                wrk_rate = _wrk_single(s.server.url, path, h, template, Path(tmp))
                if wrk_rate is None:  # no wrk: the Python client (it costs CPU on the server)
                    ones = [encode([e], s.write_key) for e in _events(f"{name}-s", singles)]
                    t0 = time.perf_counter()
                    blast(s.server.port, s.write_key, ones, 2, 16, path, h)
                    wrk_rate = singles / (time.perf_counter() - t0)
                results[name] = {
                    "wire_bytes_per_event": parsed[name][0],
                    "parse_events_per_s": round(parsed[name][1]),
                    "batched_events_per_s": round(statistics.median(rates[name])),
                    "batched_runs": [round(r) for r in rates[name]],
                    "single_requests_per_s": round(wrk_rate),
                    "statuses": statuses[name],
                }
                print(name, results[name], flush=True)
            s.wait_loaded(timeout_s=900)
        finally:
            s.server.stop()
    base = results["native"]["batched_events_per_s"]
    for r in results.values():
        r["vs_native_batched"] = round(r["batched_events_per_s"] / base, 2)
    return results
