"""Snowplow tracker protocol: ``POST /com.snowplowanalytics.snowplow/tp2`` (``payload_data``
batches) and ``GET /i`` (one event in the query string, answered with a 1x1 GIF).

Snowplow trackers send no credentials: set the tracker's ``app_id`` (``aid``) to a Gristmill
write key, or send ``Authorization: Bearer``. ``eid`` is the event id. Self-describing events
(``ue_pr``, or base64 ``ue_px``) map by their schema URI (a key without the version matches
every version); structured events by ``se:<category>:<action>``; page views as ``pv``. Context
entities (``co`` / base64 ``cx``) and the other tracker fields are kept in
``context.snowplow``. Times: ``ttm`` (true timestamp) is taken as is; otherwise ``dtm``
corrected by ``stm``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import msgspec
import orjson

from gristmill.collect.dialect import Answer, accept, occurred, resolve
from gristmill.collect.items import BodyNotJSON, Item, parse_object
from gristmill.collect.pipeline import Batch, Normalized, Outcome, RequestContext, reject
from gristmill.core.envelope import Reason, Reject
from gristmill.core.errors import PROBLEM_JSON, Problem, problem_bytes

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
KNOWN = frozenset(
    {"e", "eid", "dtm", "stm", "ttm", "uid", "duid", "sid", "aid", "ue_pr", "ue_px", "co", "cx"}
)


class _Payload(msgspec.Struct):
    data: list[msgspec.Raw]
    schema: str = ""


_decoder = msgspec.json.Decoder(_Payload)


def _json_field(params: dict[str, Any], plain: str, b64: str) -> Any:
    """``ue_pr`` / ``co`` hold JSON; ``ue_px`` / ``cx`` hold it in URL-safe base64."""
    if params.get(plain):
        return orjson.loads(params[plain])
    if params.get(b64):
        text = str(params[b64])
        return orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    return None


def _ms(v: Any) -> int | None:
    """Epoch milliseconds (as Snowplow's string fields carry them) to microseconds."""
    try:
        return int(float(v)) * 1000 if v not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return None


class Snowplow:
    name = "snowplow"
    mapping = "snowplow"
    body_limit: int | None = None
    body_key = True

    def split(self, body: bytes, content_type: str, query: Mapping[str, str]) -> Batch:
        if not body.strip() and query.get("e"):  # GET /i
            params = {k: v for k, v in query.items() if not k.startswith("_")}
            items = [Item(0, orjson.dumps(params))]
        else:
            try:
                payload = _decoder.decode(body)
            except msgspec.DecodeError as exc:
                raise BodyNotJSON(f"body is not a Snowplow payload_data batch: {exc}") from exc
            items = [Item(i, bytes(r)) for i, r in enumerate(payload.data)]
        key = None
        if items:
            first = parse_object(items[0])
            if isinstance(first, dict) and isinstance(first.get("aid"), str):
                key = first["aid"]
        return Batch(items, key)

    def query_key(self, query: Mapping[str, str]) -> str | None:
        return query.get("aid")

    def normalize(self, item: Item, ctx: RequestContext) -> Normalized:
        p = parse_object(item)
        if isinstance(p, str):
            return reject(item, Reason.UNDECODABLE, p)
        event_id, kind = p.get("eid"), p.get("e")
        if not isinstance(event_id, str) or not event_id:
            return reject(item, Reason.INVALID_ENVELOPE, "eid (event id) is required")
        try:
            unstruct = _json_field(p, "ue_pr", "ue_px")
            contexts = _json_field(p, "co", "cx")
        except (orjson.JSONDecodeError, binascii.Error, ValueError) as exc:
            return reject(
                item, Reason.UNDECODABLE, f"ue_pr/ue_px/co/cx is not JSON: {exc}", event_id=event_id
            )
        name: str | None
        props: dict[str, Any]
        if kind == "ue":
            inner = unstruct.get("data") if isinstance(unstruct, dict) else None
            if not isinstance(inner, dict) or not isinstance(inner.get("schema"), str):
                return reject(
                    item,
                    Reason.INVALID_ENVELOPE,
                    "a self-describing event needs ue_pr/ue_px with data.schema",
                    event_id=event_id,
                )
            name = inner["schema"]
            props = dict(inner.get("data") or {})
        elif kind == "se":
            name = f"se:{p.get('se_ca', '')}:{p.get('se_ac', '')}"
            props = {
                k: p[f"se_{s}"]
                for k, s in (
                    ("category", "ca"),
                    ("action", "ac"),
                    ("label", "la"),
                    ("property", "pr"),
                )
                if p.get(f"se_{s}") not in (None, "")
            }
            if p.get("se_va") not in (None, ""):
                try:
                    props["value"] = float(p["se_va"])
                except ValueError:
                    props["value"] = p["se_va"]
        else:
            name = str(kind) if kind else None
            props = {k: p[k] for k in ("url", "page", "refr") if p.get(k)}
        mapped = resolve(ctx, item, name, props)
        if isinstance(mapped, Reject):
            mapped.event_id = event_id
            return mapped
        extra = {k: v for k, v in p.items() if k not in KNOWN}
        snow: dict[str, Any] = {"tracker": extra}
        if isinstance(contexts, dict) and isinstance(contexts.get("data"), list):
            snow["contexts"] = contexts["data"]
        true_ts = _ms(p.get("ttm"))
        device = true_ts if true_ts is not None else _ms(p.get("dtm"))
        when, context = occurred(
            ctx,
            device,
            _ms(p.get("stm")),
            {"snowplow": snow},
            raw={"dtm": p.get("dtm"), "stm": p.get("stm"), "ttm": p.get("ttm")},
            exact=true_ts is not None,
        )
        return accept(
            event_id,
            mapped.event_type,
            when,
            mapped.properties,
            version=mapped.version,
            user_id=p.get("uid"),
            anonymous_id=p.get("duid"),
            session_id=p.get("sid"),
            context=context,
        )

    def answer(self, outcome: Outcome) -> Answer:
        return Answer(200, b"ok", "text/plain")

    def problem(self, p: Problem) -> Answer:
        """problem+json: trackers look only at the status, people at the reason."""
        return Answer(p.status, problem_bytes(p), PROBLEM_JSON, tuple(p.headers.items()))


class SnowplowPixel(Snowplow):
    """``GET /i``: same events, answered with a transparent 1x1 GIF as trackers expect."""

    name = "snowplow_pixel"

    def answer(self, outcome: Outcome) -> Answer:
        return Answer(200, PIXEL, "image/gif", (("Cache-Control", "no-store"),))
