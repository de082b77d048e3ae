"""Request bodies: size limits on uncompressed bytes, gzip/deflate with bomb protection.

A gzip bomb inflates at most ``limit + 1`` bytes before it is refused: decompression runs with
``max_length`` so the cost of a hostile body is bounded by the limit, not by its ratio.
"""

from __future__ import annotations

import zlib

from gristmill.core.errors import Problem, payload_too_large

GZIP_MAGIC = b"\x1f\x8b"


class Undecodable(Exception):
    """The body cannot be turned into bytes of JSON (bad compression)."""


def decode_body(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Return the uncompressed body or raise 413 / :class:`Undecodable`.

    gzip is recognized by its magic bytes too (PostHog's clients send it without a header).
    """
    enc = (content_encoding or "").strip().lower()
    if enc in ("", "identity") and not raw.startswith(GZIP_MAGIC):
        if len(raw) > limit:
            raise payload_too_large(limit, "request body")
        return raw
    if enc in ("gzip", "x-gzip") or (enc in ("", "identity") and raw.startswith(GZIP_MAGIC)):
        wbits = 16 + zlib.MAX_WBITS
    elif enc == "deflate":
        # RFC 9110 says zlib-wrapped; some clients send raw deflate. Try zlib first.
        wbits = zlib.MAX_WBITS if raw[:1] == b"\x78" else -zlib.MAX_WBITS
    else:
        raise Problem(
            415,
            "unsupported-encoding",
            "Unsupported content encoding",
            f"Content-Encoding {content_encoding!r} is not supported (use gzip or deflate)",
        )
    d = zlib.decompressobj(wbits)
    try:
        out = d.decompress(raw, limit + 1)
        if len(out) <= limit and not d.eof and not d.unconsumed_tail:
            out += d.flush()
    except zlib.error as exc:
        raise Undecodable(f"body is not valid {enc or 'gzip'} data: {exc}") from exc
    if len(out) > limit:
        raise payload_too_large(limit, "request body")
    if not d.eof:
        raise Undecodable(f"body is truncated {enc or 'gzip'} data")
    return out
