"""The export worker: one thread per installation (in processes of role ``all``) that claims
runnable jobs from the metadata store and runs them, retrying with backoff.

A job left ``running`` by a process that died is taken back: at once when that process was
on this host (its pid is gone), else once its heartbeat is ``stale_after_s`` old.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from gristmill.config import ExportSettings
from gristmill.core.ids import new_token
from gristmill.exports.runner import Superseded
from gristmill.exports.store import ExportJob, ExportStore, now

log = logging.getLogger(__name__)


def new_owner() -> str:
    """``host:pid:nonce``: who runs a job, and enough to tell later whether it still lives."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{new_token('w', 6)[2:]}"


def owner_dead(owner: str) -> bool:
    """Whether a running job's owner was a process on this host that is gone. Another host's
    jobs are judged by their heartbeat instead (``stale_after_s``)."""
    parts = owner.rsplit(":", 2)
    if len(parts) != 3 or parts[0] != socket.gethostname()[:40] or not parts[1].isdigit():
        return False
    try:
        os.kill(int(parts[1]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, someone else's
        return False
    return False


class Worker:
    def __init__(
        self,
        store: ExportStore,
        settings: ExportSettings,
        produce: Callable[[ExportJob], dict[str, Any]],
        check: Callable[[ExportJob, dict[str, Any]], dict[str, Any]],
    ) -> None:
        self.store = store
        self.settings = settings
        self._produce = produce
        self._check = check
        """The reconciliation of a produced file, stored with the success itself: a job is
        never seen finished without saying whether it reconciled."""
        self.owner = new_owner()
        self.failures = 0
        """Attempts that failed in this process (``gristmill_export_job_failures_total``)."""
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def notify(self) -> None:
        """A job was queued: wake the thread instead of waiting for its next poll."""
        with self._cv:
            self._cv.notify_all()

    def run_one(self) -> str | None:
        stale = now() - timedelta(seconds=self.settings.stale_after_s)
        job = self.store.claim(self.owner, stale)
        if job is None:
            return None
        try:
            result = self._produce(job)
        except Superseded:
            log.warning("export job %s was taken over by another worker", job.id)
            return job.id
        except Exception as exc:
            log.exception("export job %s attempt %d failed", job.id, job.attempts)
            self.failures += 1
            retry = job.attempts < self.settings.max_attempts
            at = now() + timedelta(seconds=self.settings.retry_backoff_s * job.attempts)
            self.store.fail(
                job.id, self.owner, f"{type(exc).__name__}: {exc}", retry_at=at if retry else None
            )
            return job.id
        self.store.succeed(job.id, self.owner, **result, **self._check(job, result))
        return job.id

    def run_pending(self) -> list[str]:
        self.resume_dead()
        done: list[str] = []
        while (job_id := self.run_one()) is not None:
            done.append(job_id)
        return done

    def resume_dead(self) -> list[str]:
        """Queue again the running jobs of processes on this host that died."""
        out = []
        for job in self.store.running():
            if (
                job.owner is not None
                and job.owner != self.owner
                and owner_dead(job.owner)
                and self.store.requeue(job.id, job.owner)
            ):
                out.append(job.id)
        return out

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.run_one() is not None:
                    continue
            except Exception:  # the metadata store or warehouse hiccuped: try again later
                log.exception("export worker step failed")
            with self._cv:
                self._cv.wait(self.settings.poll_interval_s)

    def start(self) -> None:
        resumed = self.resume_dead()
        if resumed:
            log.info("resuming export jobs %s", ", ".join(resumed))
        self._thread = threading.Thread(target=self._loop, name="exports", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)
