"""Body decoding: limits on uncompressed bytes, exact boundaries, gzip bombs, bad encodings."""

from __future__ import annotations

import gzip
import zlib

import pytest

from gristmill.collect.body import Undecodable, decode_body
from gristmill.core.errors import Problem

LIMIT = 4096


def test_plain_at_limit_is_accepted_and_one_over_refused() -> None:
    assert decode_body(b"x" * LIMIT, None, LIMIT) == b"x" * LIMIT
    with pytest.raises(Problem) as exc:
        decode_body(b"x" * (LIMIT + 1), None, LIMIT)
    assert exc.value.status == 413
    assert exc.value.body()["limit_bytes"] == LIMIT


@pytest.mark.parametrize("encoding", ["gzip", "deflate", None])
def test_compressed_limit_is_measured_uncompressed(encoding: str | None) -> None:
    def pack(data: bytes) -> bytes:
        return zlib.compress(data) if encoding == "deflate" else gzip.compress(data)

    assert decode_body(pack(b"a" * LIMIT), encoding, LIMIT) == b"a" * LIMIT
    with pytest.raises(Problem) as exc:
        decode_body(pack(b"a" * (LIMIT + 1)), encoding, LIMIT)
    assert exc.value.status == 413


def test_gzip_detected_by_magic_bytes_without_header() -> None:
    assert decode_body(gzip.compress(b'{"a":1}'), None, LIMIT) == b'{"a":1}'


def test_raw_deflate_is_accepted() -> None:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    raw = c.compress(b"[1,2,3]") + c.flush()
    assert decode_body(raw, "deflate", LIMIT) == b"[1,2,3]"


def test_gzip_bomb_inflates_at_most_the_limit() -> None:
    bomb = gzip.compress(b"\0" * (200 * 1024 * 1024))  # 200 MiB of zeros, ~200 KiB compressed
    with pytest.raises(Problem) as exc:
        decode_body(bomb, "gzip", 1024 * 1024)
    assert exc.value.status == 413


@pytest.mark.parametrize("body", [b"not gzip at all", gzip.compress(b"[1,2,3]")[:-6]])
def test_bad_or_truncated_gzip_is_undecodable(body: bytes) -> None:
    with pytest.raises(Undecodable):
        decode_body(body, "gzip", LIMIT)


def test_unknown_encoding_is_415() -> None:
    with pytest.raises(Problem) as exc:
        decode_body(b"x", "br", LIMIT)
    assert exc.value.status == 415
