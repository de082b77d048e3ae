"""How busy the machine's CPUs are, for the loader's batch wait.

Every load has a fixed cost, whatever its size: ~22 ms of CPU on DuckDB for the dozen
statements of a transaction (BENCHMARKS.md, "HTTP server for single-event ingest"). When the
CPUs have room that cost buys freshness: loading small batches often keeps an event one
short commit away from its 2xx. When they are saturated it is taken from the collectors,
which then answer fewer requests. So the loader asks the machine, not only itself: it reads
the CPU time spent since its last look and, past a threshold, lets batches grow
(``Loader.batch_wait``).

What "the machine" is:

- the CPUs this process may run on (``sched_getaffinity``: a container pinned with
  ``--cpuset-cpus`` sees only its own), from their lines of ``/proc/stat`` (iowait counts
  as idle);
- unless a cgroup v2 CPU quota (``cpu.max``, not ``max``) on the process's cgroup or one
  of its parents allows fewer: then the cgroup's usage against that quota. On a 64-core node
  the host's lines would show an idle machine around a saturated 2-core container;
- elsewhere (macOS, Windows) nothing: the loader keeps its own busy share alone.

The quota and the CPU set are read once, when the meter is made.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

MIN_INTERVAL_S = 0.5
"""Shorter intervals are mostly noise (the kernel counts in ticks of 10 ms per CPU)."""
SMOOTHING_S = 1.5
"""Time constant of the smoothing: the figure follows a change within a few seconds, and a
burst of a second (a checkpoint, a GC pass) does not move it past the threshold. Measured on
2 cores: 0.70 to 0.77 with one-second peaks of 0.85 to 0.92 at 20k events/s in 100-event
requests, 0.91 to 0.99 under single-event requests as fast as the server answers. By time,
not by reading: after an idle gap the gap's own average counts for (nearly) everything."""
RAMP = 0.05
"""Utilization over which the saturated wait grows from nothing to its full length."""


def saturation(utilization: float | None, start: float) -> float:
    """0 below ``start``, 1 from ``start`` + :data:`RAMP`, linear between: how far past
    saturation the machine is. A ramp, not a step, so that a loader whose longer waits bring
    the machine back under the threshold settles part way instead of flapping."""
    if utilization is None:
        return 0.0
    return min(1.0, max(0.0, (utilization - start) / RAMP))


def _proc_stat(path: Path, cpus: frozenset[int] | None) -> tuple[float, float] | None:
    """(busy, total) CPU time in clock ticks, summed over the lines of ``cpus`` (None: the
    all-CPU line, itself the sum of every CPU's); None if unreadable."""
    busy = total = 0
    found = False
    try:
        with path.open() as f:
            for line in f:
                name, _, rest = line.partition(" ")
                if not name.startswith("cpu"):
                    break  # the cpu lines come first
                mine = name == "cpu" if cpus is None else name != "cpu" and int(name[3:]) in cpus
                if not mine:
                    continue
                # user nice system idle iowait irq softirq steal (guest is inside user)
                ticks = [int(x) for x in rest.split()[:8]]
                if len(ticks) < 5:
                    return None
                busy += sum(ticks) - ticks[3] - ticks[4]
                total += sum(ticks)
                found = True
    except (OSError, ValueError):
        return None
    return (float(busy), float(total)) if found else None


def own_cgroup(mount: Path, self_cgroup: Path) -> Path:
    """This process's cgroup v2 folder: ``mount`` plus the ``0::`` path of
    ``/proc/self/cgroup`` (``/`` inside a container with its own cgroup namespace; a systemd
    unit's slice on a host, where a ``CPUQuota=`` lives)."""
    try:
        for line in self_cgroup.read_text().splitlines():
            if line.startswith("0::"):
                return mount / line[3:].strip().lstrip("/")
    except OSError:
        pass
    return mount


def _quota(folder: Path) -> float | None:
    """CPUs ``cpu.max`` allows this folder (quota / period); None without a quota."""
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def cgroup_limit(folder: Path, mount: Path) -> tuple[Path, float] | None:
    """The tightest quota on ``folder`` and its parents up to ``mount`` (a slice may limit
    every unit in it): the folder holding it and its CPUs; None when none has one."""
    best: tuple[Path, float] | None = None
    here = folder
    while True:
        q = _quota(here)
        if q is not None and (best is None or q < best[1]):
            best = (here, q)
        if here == mount or mount not in here.parents:
            return best
        here = here.parent


def _cgroup_usage_s(folder: Path) -> float | None:
    """CPU seconds the cgroup has used (``cpu.stat``'s ``usage_usec``)."""
    try:
        for line in (folder / "cpu.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "usage_usec":
                return int(value) / 1e6
    except (OSError, ValueError):
        return None
    return None


def _affinity() -> frozenset[int] | None:
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on this platform
        return None


class CpuMeter:
    """The share of the CPUs in use (0 … 1), smoothed, read at most every
    ``min_interval_s`` (callers in between get the last figure); None until two readings
    exist, or where nothing can be read."""

    def __init__(
        self,
        *,
        proc_stat: Path = Path("/proc/stat"),
        cgroup: Path | None = None,
        cgroup_mount: Path = Path("/sys/fs/cgroup"),
        cpus: frozenset[int] | None = None,
        min_interval_s: float = MIN_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if cgroup is None:
            cgroup = own_cgroup(cgroup_mount, Path("/proc/self/cgroup"))
        self._proc_stat = proc_stat
        self._cpus = _affinity() if cpus is None else cpus
        limit = cgroup_limit(cgroup, cgroup_mount)
        self._quota: tuple[Path, float] | None = None
        if limit is not None and (self._cpus is None or limit[1] < len(self._cpus)):
            self._quota = limit  # a quota above the CPUs there are never binds
        self._min_interval_s = min_interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: tuple[float, float] | None = None
        self._at: float | None = None
        self._value: float | None = None

    def _read(self, now: float) -> tuple[float, float] | None:
        """(busy, total) in comparable units: CPU seconds and CPU-seconds available, or
        CPU ticks used and elapsed."""
        if self._quota is not None:
            folder, cpus = self._quota
            used = _cgroup_usage_s(folder)
            return None if used is None else (used, now * cpus)
        return _proc_stat(self._proc_stat, self._cpus)

    def utilization(self) -> float | None:
        with self._lock:
            now = self._clock()
            if self._at is not None and now - self._at < self._min_interval_s:
                return self._value
            reading = self._read(now)
            dt = now - self._at if self._at is not None else 0.0
            self._at = now  # a failed read is not retried before the interval either
            if reading is None:
                return self._value
            if self._last is not None:
                busy = reading[0] - self._last[0]
                total = reading[1] - self._last[1]
                if total > 0:
                    share = min(1.0, max(0.0, busy / total))
                    weight = 1.0 - math.exp(-dt / SMOOTHING_S) if dt > 0 else 1.0
                    self._value = (
                        share
                        if self._value is None
                        else weight * share + (1 - weight) * self._value
                    )
            self._last = reading
            return self._value
