"""Wire the parts for one process from settings: packs, metadata, log, warehouse, collector,
loader. The API and the CLI both start from a :class:`Runtime`; nothing else builds parts."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Literal

from gristmill.auth.keys import KeyResolver
from gristmill.auth.roles import RoleTable
from gristmill.auth.sessions import SessionStore
from gristmill.auth.tokens import TokenVerifier
from gristmill.collect.enrich import build_enrichers
from gristmill.collect.pins import Pins
from gristmill.collect.service import Collector
from gristmill.config import Settings
from gristmill.core.clock import now_us
from gristmill.core.ids import new_token
from gristmill.core.subjects import Suppression
from gristmill.exports import ExportService
from gristmill.exports.store import ExportStore
from gristmill.feeds import build_feed_service
from gristmill.feeds.service import FeedService
from gristmill.governance.service import Governance
from gristmill.load.conservation import Conservation, conservation
from gristmill.load.loader import Loader
from gristmill.load.pool import LoaderPool, check_split
from gristmill.log.base import PartitionedLog
from gristmill.log.broker import BrokerLog
from gristmill.log.registry import open_log
from gristmill.log.sqlite import SQLiteLog
from gristmill.log.sqlite_parts import PartitionedSQLiteLog
from gristmill.meta.store import MetaStore
from gristmill.pack.loader import load_packs
from gristmill.rollup.freshness import Watermark, watermark
from gristmill.rollup.maintain import after_insert, provision_analytics
from gristmill.warehouse.base import Warehouse
from gristmill.warehouse.registry import open_warehouse

log = logging.getLogger(__name__)

SERVER_FILE = "server.json"

Role = Literal["all", "collect", "load"]
"""``all``: the embedded mode. ``collect``: ingest only, no warehouse (scaled out, N of them).
``load``: loaders only (``gristmill load``, M of them)."""


class Runtime:
    def __init__(
        self, settings: Settings, role: Role = "all", *, max_partitions: int | None = None
    ) -> None:
        self.settings = settings
        self.role = role
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.packs = load_packs(settings.resolved_packs_dir, settings.packs)
        self.meta = MetaStore(settings.meta_database_url)
        self.log = open_log(settings)
        self._warehouse: Warehouse | None = None
        self._loader: Loader | LoaderPool | None = None
        if role != "collect":
            self._warehouse = open_warehouse(settings)
            if isinstance(self.log, PartitionedLog):  # before provisioning changes anything
                check_split(self._warehouse, self.log.partitions, max_partitions)
            provision_analytics(self._warehouse, list(self.packs.values()))
            after = after_insert(
                self.packs, self._warehouse.dialect, mode=settings.loader.rollup_mode
            )
            if isinstance(self.log, PartitionedLog):
                self._loader = LoaderPool(
                    self.log,
                    self._warehouse,
                    self.packs,
                    settings.loader,
                    max_partitions=max_partitions,
                    lease_every_s=self.log.lease_ttl_s / 3,
                    after=after,
                )
            else:
                self._loader = Loader(
                    self.log, self._warehouse, self.packs, settings.loader, after=after
                )
        self.suppression = Suppression()
        enrichers = build_enrichers(self.packs, self.meta.traits, settings.enrichment.mmdb_path)
        self.collector = Collector(
            self.packs,
            self.log,
            settings.limits,
            self.suppression,
            enrichers,
            Pins(self.meta.pins),
        )
        self.governance = Governance(
            self.meta.governance,
            self.suppression,
            self.packs,
            settings.governance,
            warehouse=self._warehouse,
            wait_loaded=self.wait_loaded,
            scrub_log=(
                self.log.scrub if isinstance(self.log, SQLiteLog | PartitionedSQLiteLog) else None
            ),
            forget=self.meta.traits.forget,
            staging=lambda: self._feeds.staging_text_columns() if self._feeds else [],
        )
        self.local_token = new_token("gml")
        jwt_cfg = settings.auth.jwt
        tokens = None
        if jwt_cfg.enabled:
            only = next(iter(self.packs)) if len(self.packs) == 1 else None
            tokens = TokenVerifier(jwt_cfg, only)
        self.keys = KeyResolver(self.meta, settings.auth.key_cache_ttl_s, self.local_token, tokens)
        self.roles = RoleTable(self.packs)
        self.exports = ExportService(
            packs=self.packs,
            roles=self.roles,
            store=ExportStore(self.meta.engine),
            settings=settings.exports,
            data_dir=settings.data_dir,
            warehouse=lambda: self.warehouse,
            audit=self.meta.governance.audit,
        )
        self.governance.attach_exports(self.exports)
        self.sessions = SessionStore(settings.auth.session_ttl_s)
        self.started_at = now_us()
        self._feeds: FeedService | None = None
        if self._warehouse is not None:
            self._feeds = build_feed_service(
                settings, self.packs, self.meta.engine, self._warehouse
            )
        self._server_file: Path | None = None
        self._stopped = False
        self._stopping = threading.Event()

    def start(self, *, url: str | None = None, loader: bool = True) -> None:
        if self.role == "collect":
            # Erasures are requested in another process (the API's): re-read the list.
            threading.Thread(
                target=self._refresh_suppression, name="suppression", daemon=True
            ).start()
        if loader and self._loader is not None:
            self._loader.start()
            if self.role == "all":
                # One process runs the erasure worker and the retention schedule: M scaled-out
                # loaders (role "load") would each resume the same requests and runs. The
                # export worker likewise: one per installation, resuming dead jobs.
                self.governance.start()
                self.exports.start()
        if url is not None and self.role != "collect":  # collectors have no operator API
            self._server_file = self.settings.data_dir / SERVER_FILE
            write_server_file(self._server_file, url=url, token=self.local_token)

    def _refresh_suppression(self) -> None:
        every = self.settings.governance.suppression_refresh_s
        while not self._stopping.wait(every):
            try:
                self.governance.refresh_suppression()
            except Exception:  # the metadata store hiccuped: keep the last list, try again
                log.exception("refreshing the suppression list failed")

    def stop(self) -> None:
        """Stop everything; safe to call twice (a lifespan and a test fixture may both)."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        self.governance.stop()
        self.exports.stop()
        if self._loader is not None:
            self._loader.stop(drain_s=self.settings.loader.stop_drain_s)
        if self._feeds is not None:
            self._feeds.close()
        if self._server_file is not None:
            with contextlib.suppress(FileNotFoundError):
                self._server_file.unlink()
        self.log.close()
        if self._warehouse is not None:
            self._warehouse.close()
        self.meta.close()

    @property
    def warehouse(self) -> Warehouse:
        if self._warehouse is None:
            raise RuntimeError("a collect-role process has no warehouse")
        return self._warehouse

    @property
    def feeds(self) -> FeedService:
        if self._feeds is None:
            raise RuntimeError("a collect-role process serves no data feeds")
        return self._feeds

    @property
    def loader(self) -> Loader | LoaderPool:
        if self._loader is None:
            raise RuntimeError("a collect-role process has no loader")
        return self._loader

    def conservation(self) -> Conservation:
        return conservation(self.log, self.warehouse, self.loader.group)

    def wait_loaded(self, timeout_s: float) -> dict[str, object]:
        """Block until everything the log held when called is in the warehouse (an erasure
        must not be followed by the subject's older events landing). The embedded log has a
        head offset to reach; a broker log is waited on until nothing is in flight. Without a
        running loader (the CLI offline), this process loads."""
        loader = self.loader
        deadline = time.monotonic() + timeout_s
        if isinstance(self.log, PartitionedLog):
            # Collectors in other processes re-read the suppression list on a period: past
            # two of them every one drops the subject's events, so the drain below is last.
            time.sleep(2 * self.settings.governance.suppression_refresh_s)
        if isinstance(self.log, SQLiteLog):
            head = self.log.head()
            while (done := self.warehouse.stored_offset(self.log.log_id, loader.group)) < head:
                self._load_step(loader, deadline)
            return {"log": self.log.name, "head": head, "loaded_to": done}
        while (pending := self.conservation().total("in_flight")) > 0:
            self._load_step(loader, deadline, pending)
        return {"log": self.log.name, "in_flight": 0}

    @staticmethod
    def _load_step(loader: Loader | LoaderPool, deadline: float, pending: int = -1) -> None:
        if time.monotonic() > deadline:
            left = f" ({pending} events in flight)" if pending >= 0 else ""
            raise TimeoutError(f"the loader did not load the log's backlog in time{left}")
        if not loader.alive and isinstance(loader, Loader):
            loader.run_once(timeout_s=0)
        else:
            time.sleep(0.05)

    def log_depth(self) -> dict[str, object]:
        """Depth for /readyz: cheap (the broker logs' background estimate, SQLite's own
        counters), never a scan of the log."""
        if isinstance(self.log, BrokerLog):
            return {
                "log": self.log.name,
                "partitions": self.log.partitions,
                "depth_bytes_estimate": self.log.depth_bytes,
            }
        if isinstance(self.log, PartitionedSQLiteLog):
            parts = self.log.depth("loader")
            return {
                "log": self.log.name,
                "partitions": self.log.partitions,
                "depth_events": sum(d.events for d in parts),
                "depth_bytes": sum(d.bytes for d in parts),
                "by_partition": [d.as_dict() for d in parts],
            }
        snap = self.log.snapshot("loader")
        return {
            "log": self.log.name,
            "depth_events": snap.depth_events,
            "depth_bytes": snap.depth_bytes,
        }

    def watermark(self, pack: str) -> Watermark:
        """Every event of ``pack`` received before ``as_of`` is queryable."""
        snap = self.log.snapshot(self.loader.group)
        return watermark(snap.oldest_pending.get(pack))

    def readiness(self) -> list[str]:
        problems = list(self.log.check_ready())
        if self._warehouse is not None:
            problems += self._warehouse.check_ready(list(self.packs.values())).problems
        if self._loader is not None and self._loader.stats.last_error:
            problems.append(f"loader: last batch failed: {self._loader.stats.last_error}")
        return problems


def write_server_file(path: Path, *, url: str, token: str) -> None:
    """Tell local CLI commands where the server is and how to call it as operator.

    Written 0600: the token grants operator rights, like a database's local socket would.
    """
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump({"url": url, "token": token, "pid": os.getpid()}, fh)
    tmp.replace(path)


def read_server_file(data_dir: Path) -> dict[str, Any] | None:
    path = data_dir / SERVER_FILE
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    pid = int(info.get("pid", 0))
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return None  # a server that died without cleaning up
    return info
