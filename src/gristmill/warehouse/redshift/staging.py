"""Staging for Redshift's ``COPY``: each table of a batch written as one Parquet file to an
S3-compatible bucket (any store the cluster can read, or moto's server in the tests), then
removed once the load transaction ended either way. Pure pieces (the parameter conversion,
the load-path choice) live here too: none needs a cluster.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from gristmill.config import RedshiftSettings, S3Settings

_QUOTED = re.compile(r"('(?:[^'\\]|''|\\.)*'|\"(?:[^\"]|\"\")*\")")
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%s|%")


def to_format(
    text: str, params: Mapping[str, Any] | Sequence[Any] | None = None
) -> tuple[str, list[Any]]:
    """SQL rendered here (``%(name)s`` and ``%s`` placeholders) in the connector's ``format``
    style: ``%s`` per placeholder with the values in text order (a name used twice is bound
    twice), and any other ``%`` outside quotes doubled. Quoted strings and identifiers are
    left as they are (the connector does not look inside them)."""
    out: list[str] = []
    values: list[Any] = []
    position = 0
    for i, part in enumerate(_QUOTED.split(text)):
        if i % 2 == 1:
            out.append(part)
            continue

        def sub(m: re.Match[str]) -> str:
            nonlocal position
            if m.group(0) == "%":
                return "%%"
            if m.group(1) is not None:
                assert isinstance(params, Mapping), (
                    f"named parameter {m.group(1)!r} needs a mapping"
                )
                values.append(params[m.group(1)])
            else:
                assert params is not None
                assert not isinstance(params, Mapping)
                values.append(params[position])
                position += 1
            return "%s"

        out.append(_PLACEHOLDER.sub(sub, part))
    return "".join(out), values


def use_copy(cfg: RedshiftSettings, rows: int) -> bool:
    """Whether a table of ``rows`` rows loads by ``COPY`` (a staging bucket is set and the
    batch is large enough to pay for it) rather than by multi-row ``INSERT``."""
    return cfg.staging.bucket is not None and rows >= cfg.copy_min_rows


def parquet_bytes(data: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(data, buf)
    return buf.getvalue()


class Staging:
    """The staging bucket through fsspec/s3fs (``gristmill[redshift]`` brings both)."""

    def __init__(self, bucket: str, s3: S3Settings) -> None:
        import fsspec

        kwargs: dict[str, Any] = {"skip_instance_cache": True}
        if s3.key is not None:
            kwargs["key"] = s3.key.get_secret_value()
        if s3.secret is not None:
            kwargs["secret"] = s3.secret.get_secret_value()
        if s3.endpoint_url:
            kwargs["endpoint_url"] = s3.endpoint_url
        if s3.region:
            kwargs["client_kwargs"] = {"region_name": s3.region}
        self.bucket = bucket
        self.fs: Any = fsspec.filesystem("s3", **kwargs)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put(self, key: str, data: pa.Table) -> str:
        """Write ``data`` as Parquet under ``key``; the ``s3://`` URL ``COPY`` reads."""
        with self.fs.open(f"{self.bucket}/{key}", "wb") as fh:
            fh.write(parquet_bytes(data))
        return self.url(key)

    def read(self, key: str) -> pa.Table:
        with self.fs.open(f"{self.bucket}/{key}", "rb") as fh:
            return pq.read_table(io.BytesIO(fh.read()))

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(f"{self.bucket}/{key}"))

    def delete(self, key: str) -> None:
        if self.fs.exists(f"{self.bucket}/{key}"):
            self.fs.rm(f"{self.bucket}/{key}")
