"""Enrichment at collect time, declared per pack (``enrichment:`` in pack.yaml).

The collector already holds each event's context and properties; it fills the pack's
enrichment columns once, beside the promoted values, so the loader and the warehouse do no
per-row work for them:

* the event type's **category** and the **receive time** (the seed's ``event_category``,
  ``ingested_at``);
* **device info** from the user agent, parsed with ua-parser (its Rust resolver when
  installed), cached per distinct string — a site sees few distinct agents;
* **geo location** from the IP: the country from geoip2fast's bundled data file, or country
  and city from a MaxMind ``.mmdb`` when one is configured;
* **user traits as of the event's time** (role, tenure) from the pack's trait events;
* **spend** from the pack's price book at the event's time (pack/pricing.py);
* **log-spaced bins** of a numeric property, the histogram percentiles are read from
  (core/sketch.py);
* the **original payload**: the event's own JSON bytes as the producer sent them (an
  anonymized event never gets it: the bytes would keep what anonymizing strips).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import msgspec

from gristmill.core import sketch
from gristmill.pack.models import ContextEnrichment, Pack

DAY_US = 86_400_000_000


class Traits(Protocol):
    def record(self, pack: str, user: str, at_us: int, traits: dict[str, Any]) -> None: ...

    def as_of(self, pack: str, user: str, at_us: int) -> tuple[dict[str, Any], int | None]: ...


@functools.lru_cache(maxsize=20_000)
def device_info(ua: str) -> bytes:
    """``{device_type, browser, browser_version, os, os_version, device}`` as JSON text."""
    from ua_parser import parse  # imported on first use: ua-parser loads its rules then

    r = parse(ua[:2048])
    browser = r.user_agent.family if r.user_agent else None
    os_name = r.os.family if r.os else None
    device = r.device.family if r.device else None
    low = ua.lower()
    if device == "Spider" or "bot" in low or "crawler" in low:
        kind = "bot"
    elif device == "iPad" or "tablet" in low or (os_name == "Android" and "mobile" not in low):
        kind = "tablet"
    elif os_name in ("iOS", "Android") or "mobile" in low:
        kind = "mobile"
    else:
        kind = "desktop"
    return msgspec.json.encode(
        {
            "device_type": kind,
            "browser": browser,
            "browser_version": r.user_agent.major if r.user_agent else None,
            "os": os_name,
            "os_version": r.os.major if r.os else None,
            "device": device,
        }
    )


class GeoLookup:
    """IP -> ``{country[, city]}``; ``None`` for private, reserved or unknown addresses."""

    def __init__(self, mmdb: Path | None = None) -> None:
        self.mmdb = mmdb
        self._reader: Any = None
        self._fast: Any = None

    def _open(self) -> None:
        if self.mmdb is not None:
            import maxminddb

            self._reader = maxminddb.open_database(str(self.mmdb))
        else:
            from geoip2fast import GeoIP2Fast

            self._fast = GeoIP2Fast()

    @functools.lru_cache(maxsize=50_000)  # noqa: B019 - one instance per process
    def lookup(self, ip: str) -> bytes | None:
        try:
            addr = ipaddress.ip_address(ip.strip())
        except ValueError:
            return None
        if not addr.is_global:
            return None
        if self._reader is None and self._fast is None:
            self._open()
        if self._reader is not None:
            rec = self._reader.get(str(addr)) or {}
            country = (rec.get("country") or {}).get("iso_code")
            city = ((rec.get("city") or {}).get("names") or {}).get("en")
            if not country:
                return None
            return msgspec.json.encode({"country": country, "city": city})
        code = self._fast.lookup(str(addr)).country_code
        if not code or code == "--":
            return None
        return msgspec.json.encode({"country": code})


def _first(ctx: Mapping[str, Any] | None, spec: ContextEnrichment) -> str | None:
    if not ctx:
        return None
    for k in spec.keys:
        v = ctx.get(k)
        if isinstance(v, str) and v:
            return v
    return None


class Enricher:
    """The enrichment of one pack; :meth:`fill` writes into a promoted-values tuple."""

    def __init__(self, pack: Pack, geo: GeoLookup, traits: Traits | None) -> None:
        self.pack = pack
        self.spec = pack.spec.enrichment
        self.geo = geo
        self.traits = traits if self.spec.traits is not None else None
        self.trait_events = frozenset(self.spec.traits.from_events if self.spec.traits else ())
        self.book = pack.price_book
        self._bins = {
            col: (b.property, sketch.gamma(b.relative_error))
            for col, b in self.spec.log_bins.items()
        }
        self._slots: dict[str, dict[str, int]] = {}
        for name, et in pack.spec.event_types.items():
            cols = [c.name for c in pack.columns(et.table) if c.promoted]
            self._slots[name] = {c: i for i, c in enumerate(cols)}

    def fill(
        self,
        event_type: str,
        values: tuple[Any, ...],
        *,
        user_id: str | None,
        occurred_at: int,
        received_at: int,
        properties: Mapping[str, Any],
        context: Mapping[str, Any] | None,
        raw: bytes | None = None,
    ) -> tuple[Any, ...]:
        slots = self._slots[event_type]
        en = self.spec
        out = list(values)

        def put(col: str | None, value: Any) -> None:
            if col is not None and col in slots and value is not None:
                out[slots[col]] = value

        put(en.category_column, self.pack.spec.event_types[event_type].category)
        put(en.received_column, received_at)
        if en.payload_column is not None and raw is not None:
            put(en.payload_column, raw.decode())
        if en.user_agent is not None and (ua := _first(context, en.user_agent)):
            put(en.user_agent.column, device_info(ua).decode())
        if en.geo is not None and (ip := _first(context, en.geo)):
            geo = self.geo.lookup(ip)
            put(en.geo.column, None if geo is None else geo.decode())
        if self.book is not None and en.pricing is not None:
            put(en.pricing.column, self.book.spend_micros(properties, occurred_at))
        for col, (prop, g) in self._bins.items():
            v = properties.get(prop)
            if isinstance(v, int | float) and not isinstance(v, bool):
                put(col, sketch.bin_of(v, g))
        if self.traits is not None and en.traits is not None and user_id:
            if event_type in self.trait_events:
                self.traits.record(self.pack.name, user_id, occurred_at, dict(properties))
            traits, first = self.traits.as_of(self.pack.name, user_id, occurred_at)
            for col, key in en.traits.columns.items():
                v = traits.get(key)
                put(col, None if v is None else str(v))
            if first is not None:
                put(en.traits.tenure_column, (occurred_at - first) // DAY_US)
        return tuple(out)


def build_enrichers(
    packs: Mapping[str, Pack], traits: Traits | None, mmdb: Path | None = None
) -> dict[str, Enricher]:
    """One enricher per pack that declares any enrichment."""
    geo = GeoLookup(mmdb)
    return {
        name: Enricher(p, geo, traits) for name, p in packs.items() if p.spec.enrichment.columns()
    }
