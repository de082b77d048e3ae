"""How busy the machine's CPUs are, for the loader's batch wait.

Every load has a fixed cost, whatever its size: ~20 ms of CPU on DuckDB for the dozen
statements of a transaction (BENCHMARKS.md, "Single-event requests"). When the CPUs have room
that cost buys freshness: loading small batches often keeps an event one short commit away
from its 2xx. When they are saturated it is taken from the collectors, which then answer
fewer requests. So the loader asks the machine, not only itself: it reads the CPU time spent
since its last look and, past a threshold, lets batches grow (``Loader.batch_wait``).

Where the time is read from:

- a cgroup v2 CPU quota on the process's own cgroup (``cpu.max`` not ``max``): the
  container's or the unit's usage against its quota, since the host's ``/proc/stat``
  would show an idle 64-core node around a saturated 2-core container;
- otherwise ``/proc/stat``: every CPU's busy and idle time (iowait counts as idle);
- elsewhere (macOS, Windows) nothing: the loader keeps its own busy share alone.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

MIN_INTERVAL_S = 0.5
"""Shorter intervals are mostly noise (the kernel counts in ticks of 10 ms per CPU)."""
SMOOTHING = 0.3
"""Weight of the newest interval: the figure follows a change within a few seconds, and a
burst of a second (a checkpoint, a GC pass) does not move it past the threshold. Measured on
2 cores: 0.70 to 0.77 with one-second peaks of 0.85 to 0.92 at 20k events/s in 100-event requests,
0.91 to 0.99 under single-event requests as fast as the server answers."""
RAMP = 0.05
"""Utilization over which the saturated wait grows from nothing to its full length."""


def saturation(utilization: float | None, start: float) -> float:
    """0 below ``start``, 1 from ``start`` + :data:`RAMP`, linear between: how far past
    saturation the machine is. A ramp, not a step, so that a loader whose longer waits bring
    the machine back under the threshold settles part way instead of flapping."""
    if utilization is None:
        return 0.0
    return min(1.0, max(0.0, (utilization - start) / RAMP))


def _proc_stat(path: Path) -> tuple[float, float] | None:
    """(busy, total) CPU time summed over every CPU, in clock ticks; None if unreadable."""
    try:
        with path.open() as f:
            first = f.readline().split()
        if not first or first[0] != "cpu":
            return None
        ticks = [int(x) for x in first[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    if len(ticks) < 5:
        return None
    idle = ticks[3] + ticks[4]
    total = sum(ticks)
    return float(total - idle), float(total)


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


def _cgroup_quota(root: Path) -> float | None:
    """CPUs the container may use (``cpu.max`` quota / period); None without a quota."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return int(quota) / int(period)


def _cgroup_usage_s(root: Path) -> float | None:
    try:
        for line in (root / "cpu.stat").read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "usage_usec":
                return int(value) / 1e6
    except (OSError, ValueError):
        return None
    return None


class CpuMeter:
    """The share of the machine's CPU in use (0 … 1), smoothed, read at most every
    ``min_interval_s`` (callers in between get the last figure); None until two readings
    exist, or where nothing can be read."""

    def __init__(
        self,
        *,
        proc_stat: Path = Path("/proc/stat"),
        cgroup: Path | None = None,
        min_interval_s: float = MIN_INTERVAL_S,
    ) -> None:
        if cgroup is None:
            cgroup = own_cgroup(Path("/sys/fs/cgroup"), Path("/proc/self/cgroup"))
        self._min_interval_s = min_interval_s
        self._proc_stat = proc_stat
        self._cgroup = cgroup
        self._cpus = _cgroup_quota(cgroup)
        self._lock = threading.Lock()
        self._last: tuple[float, float] | None = None
        self._at = 0.0
        self._value: float | None = None

    def _read(self, now: float) -> tuple[float, float] | None:
        """(busy, total) in comparable units: CPU seconds and CPU-seconds available."""
        if self._cpus is not None:
            used = _cgroup_usage_s(self._cgroup)
            return None if used is None else (used, now * self._cpus)
        return _proc_stat(self._proc_stat)

    def utilization(self) -> float | None:
        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._at < self._min_interval_s:
                return self._value
            reading = self._read(now)
            if reading is None:
                return self._value
            if self._last is not None:
                busy = reading[0] - self._last[0]
                total = reading[1] - self._last[1]
                if total > 0:
                    share = min(1.0, max(0.0, busy / total))
                    self._value = (
                        share
                        if self._value is None
                        else SMOOTHING * share + (1 - SMOOTHING) * self._value
                    )
            self._last, self._at = reading, now
            return self._value
