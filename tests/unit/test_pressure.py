"""The CPU meter behind the loader's saturated wait: /proc/stat and cgroup v2 files as the
kernel writes them, read twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from gristmill.load.pressure import SMOOTHING, CpuMeter, own_cgroup, saturation


def _stat(path: Path, user: int, idle: int, iowait: int = 0) -> None:
    # user nice system idle iowait irq softirq steal guest guest_nice, then per-CPU lines
    path.write_text(
        f"cpu  {user} 0 0 {idle} {iowait} 0 0 0 0 0\n"
        f"cpu0 {user} 0 0 {idle} {iowait} 0 0 0 0 0\nintr 1 2 3\n"
    )


def test_proc_stat_share_of_busy_ticks_smoothed(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    meter = CpuMeter(proc_stat=stat, cgroup=tmp_path / "none", min_interval_s=0)
    _stat(stat, user=1000, idle=1000)
    assert meter.utilization() is None  # one reading: no interval yet
    _stat(stat, user=1090, idle=1010)  # 90 of 100 ticks busy
    assert meter.utilization() == pytest.approx(0.9)
    _stat(stat, user=1090, idle=1060, iowait=50)  # idle, and waiting on disk counts as idle
    assert meter.utilization() == pytest.approx(SMOOTHING * 0.0 + (1 - SMOOTHING) * 0.9)


def test_readings_closer_than_the_interval_return_the_last_figure(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    meter = CpuMeter(proc_stat=stat, cgroup=tmp_path / "none", min_interval_s=3600)
    _stat(stat, user=0, idle=0)
    assert meter.utilization() is None
    _stat(stat, user=100, idle=0)
    assert meter.utilization() is None  # not read again within the interval


def test_nothing_to_read_gives_no_figure(tmp_path: Path) -> None:
    meter = CpuMeter(proc_stat=tmp_path / "missing", cgroup=tmp_path / "none", min_interval_s=0)
    assert meter.utilization() is None
    assert meter.utilization() is None
    for text in ("intr 1 2\n", "cpu  1 x 3 4 5\n", "cpu  1 2\n", ""):
        (tmp_path / "bad").write_text(text)
        meter = CpuMeter(proc_stat=tmp_path / "bad", cgroup=tmp_path / "none", min_interval_s=0)
        assert meter.utilization() is None
        assert meter.utilization() is None


def test_cgroup_quota_is_the_denominator_when_there_is_one(tmp_path: Path) -> None:
    """Two CPUs of quota: usage against elapsed time times two. The host's /proc/stat (here
    a file showing an idle machine) is not read."""
    cg = tmp_path / "cg"
    cg.mkdir()
    (cg / "cpu.max").write_text("200000 100000\n")
    stat = tmp_path / "stat"
    _stat(stat, user=0, idle=0)
    meter = CpuMeter(proc_stat=stat, cgroup=cg, min_interval_s=0)
    (cg / "cpu.stat").write_text("usage_usec 1000\nuser_usec 800\nsystem_usec 200\n")
    assert meter.utilization() is None
    (cg / "cpu.stat").write_text("usage_usec 3600000000001000\n")  # far more than 2 CPUs gave
    assert meter.utilization() == 1.0
    _stat(stat, user=0, idle=10**9)
    assert meter.utilization() == pytest.approx(1 - SMOOTHING)  # no usage since: 0, smoothed


def test_no_quota_reads_the_machine(tmp_path: Path) -> None:
    cg = tmp_path / "cg"
    cg.mkdir()
    (cg / "cpu.max").write_text("max 100000\n")
    (cg / "cpu.stat").write_text("usage_usec 5\n")
    stat = tmp_path / "stat"
    meter = CpuMeter(proc_stat=stat, cgroup=cg, min_interval_s=0)
    _stat(stat, user=0, idle=0)
    meter.utilization()
    _stat(stat, user=25, idle=75)
    assert meter.utilization() == pytest.approx(0.25)


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


def test_this_machine_gives_a_share() -> None:
    """Linux: the real /proc/stat (or this container's quota) reads as a share in [0, 1]."""
    if not Path("/proc/stat").exists():
        pytest.skip("no /proc/stat here (not Linux)")
    meter = CpuMeter(min_interval_s=0)
    meter.utilization()
    sum(i * i for i in range(200_000))  # let the kernel count a tick or two
    value = meter.utilization()
    assert value is None or 0.0 <= value <= 1.0


def test_saturation_ramps_from_the_threshold() -> None:
    assert saturation(None, 0.9) == 0.0
    assert saturation(0.5, 0.9) == 0.0
    assert saturation(0.9, 0.9) == 0.0
    assert saturation(0.925, 0.9) == pytest.approx(0.5)
    assert saturation(0.95, 0.9) == pytest.approx(1.0)
    assert saturation(1.0, 0.9) == 1.0
