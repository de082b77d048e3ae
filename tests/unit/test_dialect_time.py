"""Device-time handling shared by every dialect: skew correction, the future clamp, historical
imports, exact timestamps, and refusal of absurd times."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gristmill.collect.dialect import occurred, parse_time
from gristmill.collect.pipeline import Batch, RequestContext
from gristmill.core.clock import FUTURE_TOLERANCE_US, MICROS, BadTime
from gristmill.pack.loader import load_pack
from gristmill.schema.registry import SchemaRegistry
from tests.conftest import PACKS

PACK = load_pack(PACKS / "marketplace")
RECEIVED = 1_790_000_000 * MICROS  # 2026-09


def ctx(batch: Batch) -> RequestContext:
    return RequestContext(PACK, SchemaRegistry(PACK), "s", "segment", RECEIVED, 32768, {}, batch)


@given(
    st.integers(min_value=-(10**12), max_value=10**12),
    st.integers(min_value=0, max_value=86_400 * MICROS),
)
def test_skew_is_corrected_from_the_send_time(skew: int, age: int) -> None:
    # The event happened `age` before it was sent; the device clock is off by `skew`.
    true_event = RECEIVED - age
    device_event, device_sent = true_event + skew, RECEIVED + skew
    when, context = occurred(
        ctx(Batch([], sent_at=device_sent)), device_event, None, None, raw={"timestamp": "t"}
    )
    assert when == true_event
    assert context["gristmill"]["device_times"] == {"timestamp": "t"}


def test_far_future_is_clamped_and_flagged() -> None:
    device = RECEIVED + FUTURE_TOLERANCE_US + MICROS
    when, context = occurred(ctx(Batch([])), device, device, None, raw={}, exact=True)
    assert when == RECEIVED
    assert context["gristmill"]["clamped_future"] is True


def test_historical_import_keeps_old_device_times() -> None:
    old = RECEIVED - 400 * 86_400 * MICROS
    when, context = occurred(
        ctx(Batch([], sent_at=RECEIVED - 300 * 86_400 * MICROS, historical=True)),
        old,
        None,
        None,
        raw={},
    )
    assert when == old
    assert context["gristmill"]["historical"] is True


def test_no_device_time_means_receive_time() -> None:
    assert occurred(ctx(Batch([])), None, None, None, raw={})[0] == RECEIVED


def test_an_absurd_sent_at_cannot_push_events_before_1900() -> None:
    with pytest.raises(BadTime):
        occurred(
            ctx(Batch([], sent_at=parse_time("9999-01-01T00:00:00Z"))),
            parse_time("2026-01-01T00:00:00Z"),
            None,
            None,
            raw={},
        )


@pytest.mark.parametrize(
    "value", [float("inf"), 1e306, "not a time", "2026-01-01T00:00:00", True, {"a": 1}]
)
def test_unusable_device_times_are_none(value: object) -> None:
    assert parse_time(value) is None


def test_device_time_formats() -> None:
    assert parse_time("2026-11-01T10:00:00.250Z") == parse_time(1793527200250)
    assert parse_time("1793527200250") == parse_time(1793527200.250 * 1000)
