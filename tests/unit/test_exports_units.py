"""Pack checks of ``exports:``, the CSV cell format and the signed-link tokens."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from gristmill.core.errors import ConfigError
from gristmill.exports.csvout import CsvSink, cell, json_cell, read_totals
from gristmill.exports.signing import BadToken, sign, verify
from gristmill.pack import load_pack
from tests.conftest import PACKS


def _pack_with(tmp_path: Path, old: str, new: str) -> Path:
    dst = tmp_path / "marketplace"
    shutil.copytree(PACKS / "marketplace", dst)
    f = dst / "pack.yaml"
    text = f.read_text()
    assert old in text
    f.write_text(text.replace(old, new))
    return dst


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "metrics: {orders: orders, gmv_cents: gmv_cents, revenue_cents: revenue_cents}",
            "metrics: {orders: orders, buyers: buyers}",
            "exports.vendor_daily.metrics.buyers: a count_distinct metric is not exact",
        ),
        ("table: marketplace_events        #", "table: nope        #", "unknown table 'nope'"),
        (
            "    filters: [event_type]\n    roles: [admin, vendor]",
            "    filters: [amount_cents]\n    roles: [admin, vendor]",
            "'amount_cents' is not a dimension",
        ),
        (
            "    group_by: [vendor_store_id]",
            "    group_by: [placement]",
            "'placement' is not a dimension of every table",
        ),
        (
            "exports:create, exports:read]\n    scope: {vendor_store_id: store_id}",
            "exports:read]\n    scope: {vendor_store_id: store_id}",
            "role 'vendor' lacks permission 'exports:create'",
        ),
        (
            "    prefix_by: vendor_store_id\n    max_window",
            "    prefix_by: amount_cents\n    max_window",
            "'amount_cents' is not a dimension",
        ),
    ],
)
def test_pack_checks_refuse_bad_exports(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(ConfigError, match="exports") as err:
        load_pack(_pack_with(tmp_path, old, new))
    assert message in str(err.value)


def test_unknown_export_keys_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="stream_max_row"):
        load_pack(_pack_with(tmp_path, "stream_max_rows: 2000", "stream_max_row: 2000"))


def test_cells_are_exact_and_deterministic() -> None:
    assert cell(None) == ""
    assert cell(True) == "true"
    assert cell(12345678901234567890) == "12345678901234567890"
    assert cell(Decimal("1200")) == "1200"
    assert cell(Decimal("12.50")) == "12.5"
    assert cell(0.1) == "0.1"
    ny = timezone(timedelta(hours=-5))
    assert cell(datetime(2026, 11, 2, 5, 0, tzinfo=ny)) == "2026-11-02T10:00:00.000000Z"
    assert json_cell('{"b": 1, "a": [1, 2]}') == '{"a":[1,2],"b":1}'
    assert json_cell({"b": 1, "a": "é"}) == '{"a":"é","b":1}'


def test_sink_quotes_per_rfc4180_and_totals_read_back() -> None:
    sink = CsvSink(["name", "cents"], ["cents"])
    data = sink.header() + sink.encode([['a "b", c', "5"], ["x\ny", ""], ["z", "-2"]])
    assert data == b'name,cents\r\n"a ""b"", c",5\r\n"x\ny",\r\nz,-2\r\n'
    assert (sink.rows, sink.totals, sink.size) == (3, {"cents": 3}, len(data))
    assert read_totals(iter([data[:7], data[7:]]), ["cents"]) == (3, {"cents": 3})


def test_tokens_refuse_tampering_and_expiry() -> None:
    key = b"k" * 32
    now = int(datetime.now(UTC).timestamp())
    token = sign(key, "exp_1", "csv", now + 60)
    assert verify(key, token, now).job_id == "exp_1"
    with pytest.raises(BadToken, match="altered"):
        verify(key, token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1], now)
    with pytest.raises(BadToken, match="altered"):
        verify(b"x" * 32, token, now)
    with pytest.raises(BadToken, match="expired"):
        verify(key, token, now + 60)
    with pytest.raises(BadToken):
        verify(key, "garbage", now)
