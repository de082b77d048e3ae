"""Where export files go: a local directory or an S3-compatible bucket, both through fsspec.

Every object is written under a temporary name and moved to its final name once complete,
so a reader never sees half a file, and a worker killed mid-write leaves only a ``.part``
object that the next attempt overwrites. On S3 the move is a server-side copy; the final
object appears whole (S3 PUT and copy are atomic per object).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from gristmill.config import S3Settings

READ_CHUNK = 1 << 20


class DestinationUnavailable(RuntimeError):
    """The destination's driver is not installed (``pip install gristmill[exports]``)."""


def _fsspec() -> Any:
    try:
        import fsspec
    except ImportError as exc:  # the extra is not installed
        raise DestinationUnavailable(
            "exports need fsspec (and s3fs for S3): pip install 'gristmill[exports]'"
        ) from exc
    return fsspec


class Destination:
    def __init__(self, url: str, s3: S3Settings) -> None:
        parsed = urlparse(url)
        self.url = url
        self.scheme = parsed.scheme or "file"
        fsspec = _fsspec()
        if self.scheme == "file":
            root = Path(parsed.path if parsed.scheme else url).resolve()
            root.mkdir(parents=True, exist_ok=True)
            self.root = str(root)
            self.fs = fsspec.filesystem("file")
        elif self.scheme == "s3":
            self.root = (parsed.netloc + parsed.path).rstrip("/")
            # SigV4 presigned URLs (X-Amz-Expires): the only kind every region accepts.
            kwargs: dict[str, Any] = {
                "skip_instance_cache": True,
                "config_kwargs": {"signature_version": "s3v4"},
            }
            if s3.key is not None:
                kwargs["key"] = s3.key.get_secret_value()
            if s3.secret is not None:
                kwargs["secret"] = s3.secret.get_secret_value()
            if s3.endpoint_url:
                kwargs["endpoint_url"] = s3.endpoint_url
            if s3.region:
                kwargs["client_kwargs"] = {"region_name": s3.region}
            try:
                self.fs = fsspec.filesystem("s3", **kwargs)
            except ImportError as exc:
                raise DestinationUnavailable(
                    "an s3:// destination needs s3fs: pip install 'gristmill[exports]'"
                ) from exc
        else:
            raise ValueError(f"export destination {url!r}: use file:///path or s3://bucket/prefix")

    @property
    def local(self) -> bool:
        return self.scheme == "file"

    def path(self, key: str) -> str:
        """The object path of ``key`` (relative, ``/``-separated) under the root."""
        return f"{self.root}/{key}"

    def display(self, path: str) -> str:
        return f"{self.scheme}://{path}" if self.scheme == "s3" else f"file://{path}"

    @contextlib.contextmanager
    def writer(self, path: str) -> Iterator[Any]:
        """A binary file to write ``path`` through; moved into place when the block ends
        without an error, left as ``<path>.part`` otherwise."""
        part = f"{path}.part"
        if self.local:
            Path(part).parent.mkdir(parents=True, exist_ok=True)
        with self.fs.open(part, "wb") as fh:
            yield fh
            if self.local:
                fh.flush()
                os.fsync(fh.fileno())
        self.fs.mv(part, path)
        self.refresh()

    def put(self, path: str, data: bytes) -> None:
        with self.writer(path) as fh:
            fh.write(data)

    def chunks(self, path: str) -> Iterator[bytes]:
        with self.fs.open(path, "rb") as fh:
            while block := fh.read(READ_CHUNK):
                yield block

    def read(self, path: str) -> bytes:
        return b"".join(self.chunks(path))

    def exists(self, path: str) -> bool:
        self.refresh()
        return bool(self.fs.exists(path))

    def size(self, path: str) -> int:
        return int(self.fs.size(path))

    def delete(self, path: str) -> None:
        for p in (path, f"{path}.part"):
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm(p)
        self.refresh()

    def refresh(self) -> None:
        """Forget listings s3fs cached (another process may have written since)."""
        self.fs.invalidate_cache()

    def presign(self, path: str, expires_s: int) -> str:
        """A presigned GET URL (S3 only): the store itself refuses it after ``expires_s``."""
        return str(self.fs.url(path, expires=expires_s))

    def local_file(self, path: str) -> Path:
        if not self.local:
            raise ValueError("not a local destination")
        return Path(path)
