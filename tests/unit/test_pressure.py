"""The CPU meter behind the loader's saturated wait: /proc/stat and cgroup v2 files as the
kernel writes them, read twice, on a clock the test moves."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from gristmill.load.pressure import (
    SMOOTHING_S,
    CpuMeter,
    cgroup_limit,
    own_cgroup,
    saturation,
)

ONE = frozenset({0})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _stat(path: Path, *cpus: tuple[int, int, int]) -> None:
    """The all-CPU line, then one line per CPU of (user, idle, iowait) ticks, then the rest
    of the file (user nice system idle iowait irq softirq steal guest guest_nice)."""
    total = [sum(c[i] for c in cpus) for i in range(3)]
    lines = [f"cpu  {total[0]} 0 0 {total[1]} {total[2]} 0 0 0 0 0"]
    lines += [f"cpu{n} {u} 0 0 {i} {w} 0 0 0 0 0" for n, (u, i, w) in enumerate(cpus)]
    path.write_text("\n".join([*lines, "intr 1 2 3", "ctxt 9"]) + "\n")


def _meter(tmp: Path, clock: Clock, **kw: object) -> CpuMeter:
    args: dict[str, object] = {
        "proc_stat": tmp / "stat",
        "cgroup": tmp / "none",
        "cgroup_mount": tmp / "none",
        "cpus": ONE,
        "min_interval_s": 0,
        "clock": clock,
    }
    return CpuMeter(**{**args, **kw})  # type: ignore[arg-type]


def _over_a_second(
    tmp: Path,
    meter: CpuMeter,
    clock: Clock,
    before: tuple[tuple[int, int, int], ...],
    after: tuple[tuple[int, int, int], ...],
) -> float | None:
    """The meter's figure after /proc/stat went from ``before`` to ``after`` in a second."""
    _stat(tmp / "stat", *before)
    meter.utilization()
    clock.now += 1
    _stat(tmp / "stat", *after)
    return meter.utilization()


def test_proc_stat_share_of_busy_ticks_smoothed_by_time(tmp_path: Path) -> None:
    clock = Clock()
    meter = _meter(tmp_path, clock)
    _stat(tmp_path / "stat", (1000, 1000, 0))
    assert meter.utilization() is None  # one reading: no interval yet
    clock.now += 1
    _stat(tmp_path / "stat", (1090, 1010, 0))  # 90 of 100 ticks busy
    assert meter.utilization() == pytest.approx(0.9)  # the first figure is taken whole
    clock.now += 1
    _stat(tmp_path / "stat", (1090, 1060, 50))  # idle, and waiting on disk counts as idle
    weight = 1 - math.exp(-1 / SMOOTHING_S)
    assert meter.utilization() == pytest.approx(weight * 0.0 + (1 - weight) * 0.9)
    clock.now += 60  # after a long gap the gap's own average is (nearly) all that counts
    _stat(tmp_path / "stat", (1190, 1960, 50))
    assert meter.utilization() == pytest.approx(0.1, abs=1e-6)


def test_only_the_cpus_this_process_may_use(tmp_path: Path) -> None:
    """Pinned to CPU 1 (``--cpuset-cpus``): CPU 0's load is someone else's."""
    clock = Clock()
    meter = _meter(tmp_path, clock, cpus=frozenset({1}))
    idle = ((0, 0, 0), (0, 0, 0))
    assert _over_a_second(tmp_path, meter, clock, idle, ((100, 0, 0), (20, 80, 0))) == (
        pytest.approx(0.2)
    )


def test_readings_closer_than_the_interval_return_the_last_figure(tmp_path: Path) -> None:
    clock = Clock()
    meter = _meter(tmp_path, clock, min_interval_s=0.5)
    _stat(tmp_path / "stat", (0, 0, 0))
    assert meter.utilization() is None
    clock.now += 0.2
    _stat(tmp_path / "stat", (100, 0, 0))
    assert meter.utilization() is None  # not read again within the interval
    clock.now += 0.4
    assert meter.utilization() == pytest.approx(1.0)


def test_nothing_to_read_gives_no_figure(tmp_path: Path) -> None:
    clock = Clock()
    meter = _meter(tmp_path, clock, proc_stat=tmp_path / "missing")
    assert meter.utilization() is None
    clock.now += 1
    assert meter.utilization() is None
    for text in ("intr 1 2\n", "cpu  1 x 3 4 5\ncpu0 1 x 3 4 5\n", "cpu0 1 2\n", ""):
        (tmp_path / "bad").write_text(text)
        meter = _meter(tmp_path, clock, proc_stat=tmp_path / "bad")
        assert meter.utilization() is None
        clock.now += 1
        assert meter.utilization() is None


def _cgroup(folder: Path, quota: str, usage_us: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cpu.max").write_text(f"{quota} 100000\n")
    (folder / "cpu.stat").write_text(f"usage_usec {usage_us}\nuser_usec 0\nsystem_usec 0\n")


def test_cgroup_quota_is_the_denominator_when_it_binds(tmp_path: Path) -> None:
    """One CPU of quota on a two-CPU machine: the cgroup's usage against one CPU-second per
    second. The machine's /proc/stat (idle here) is not read."""
    mount = tmp_path / "fs"
    _cgroup(mount, "max")
    me = mount / "kubepods" / "pod1"
    _cgroup(me, "100000", usage_us=1_000_000)
    _stat(tmp_path / "stat", (0, 0, 0), (0, 0, 0))
    clock = Clock()
    meter = _meter(tmp_path, clock, cgroup=me, cgroup_mount=mount, cpus=frozenset({0, 1}))
    assert meter.utilization() is None
    clock.now += 2
    _cgroup(me, "100000", usage_us=1_500_000)  # 0.5 CPU-seconds in 2 s of one CPU
    _stat(tmp_path / "stat", (0, 100, 0), (0, 100, 0))
    assert meter.utilization() == pytest.approx(0.25)


def test_a_parent_slice_quota_binds_and_a_loose_one_does_not(tmp_path: Path) -> None:
    mount = tmp_path / "fs"
    _cgroup(mount, "max")
    _cgroup(mount / "batch.slice", "150000")
    unit = mount / "batch.slice" / "gristmill.service"
    _cgroup(unit, "max")
    assert cgroup_limit(unit, mount) == (mount / "batch.slice", 1.5)
    _cgroup(unit, "50000")
    assert cgroup_limit(unit, mount) == (unit, 0.5)
    _cgroup(mount / "other", "max")
    assert cgroup_limit(mount / "other", mount) is None
    # A quota of 4 CPUs on a 2-CPU process binds nothing: /proc/stat is read instead.
    _cgroup(unit, "400000")
    _cgroup(mount / "batch.slice", "max")
    clock = Clock()
    meter = _meter(tmp_path, clock, cgroup=unit, cgroup_mount=mount, cpus=frozenset({0, 1}))
    idle = ((0, 0, 0), (0, 0, 0))
    assert _over_a_second(tmp_path, meter, clock, idle, ((50, 50, 0), (50, 50, 0))) == (
        pytest.approx(0.5)
    )


def test_own_cgroup_from_proc_self_cgroup(tmp_path: Path) -> None:
    """The unified hierarchy's ``0::`` line names the folder; v1 lines are skipped; without
    one (or the file) the mount itself."""
    mount = tmp_path / "fs"
    me = tmp_path / "cgroup"
    me.write_text("4:memory:/x\n1:cpu:/\n0::/system.slice/gristmill.service\n")
    assert own_cgroup(mount, me) == mount / "system.slice" / "gristmill.service"
    me.write_text("0::/\n")
    assert own_cgroup(mount, me) == mount
    me.write_text("1:cpu:/\n")
    assert own_cgroup(mount, me) == mount
    assert own_cgroup(mount, tmp_path / "missing") == mount


def test_this_machine_counts_this_threads_work() -> None:
    """Linux, unpinned from a quota: the real /proc/stat over this process's CPUs shows the
    busy loop below as CPU time used."""
    if not Path("/proc/stat").exists() or not hasattr(os, "sched_getaffinity"):
        pytest.skip("no /proc/stat or CPU affinity here (not Linux)")
    nowhere = Path("/nonexistent")
    meter = CpuMeter(cgroup=nowhere, cgroup_mount=nowhere, min_interval_s=0)
    meter.utilization()
    sum(i * i for i in range(2_000_000))  # ~0.1 s: ten ticks or more on one CPU
    value = meter.utilization()
    assert value is not None
    assert 0.0 < value <= 1.0


def test_saturation_ramps_from_the_threshold() -> None:
    assert saturation(None, 0.9) == 0.0
    assert saturation(0.5, 0.9) == 0.0
    assert saturation(0.9, 0.9) == 0.0
    assert saturation(0.925, 0.9) == pytest.approx(0.5)
    assert saturation(0.95, 0.9) == pytest.approx(1.0)
    assert saturation(1.0, 0.9) == 1.0
