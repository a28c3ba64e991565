"""The job's share of shared meters: the wrapping meter, GPU shares, MIG slices, ``auto``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from backends.attribution import (
    Decision,
    FixedShare,
    ProcessTree,
    SharedMeter,
    attribute,
    decide,
)
from backends.base import Meter
from backends.cpu.rapl import find_rapl
from backends.gpu.amd import find_amd_gpus
from backends.gpu.nvidia import find_gpus
from tests.fake_amdsmi import SimulatedAmdGpu, install_fake_amdsmi
from tests.fake_nvml import (
    SimulatedGPU,
    SimulatedMigSlice,
    constant_power,
    install_fake_nvml,
)
from tests.fake_powercap import build_powercap
from tests.measure.test_invariants import simulated
from tracker.measure.sampler import Sampler
from tracker.notices import Notices

AMD_BDF = "0000:c1:00.0"


def close_all(meters: list[Meter]) -> None:
    for meter in meters:
        meter.close()


class Shares:
    """A share source that hands out the given shares in turn (None: cannot be said now)."""

    def __init__(self, *shares: float | None) -> None:
        self.shares = list(shares)

    def __call__(self) -> float | None:
        return self.shares.pop(0)


def test_a_shared_counter_adds_each_host_delta_times_its_share_across_a_wrap(
    tmp_path: Path,
) -> None:
    zone = build_powercap(tmp_path, sockets=1, dram=False, max_energy_range_uj=10_000_000)["cpu0"]
    zone.set_energy_uj(0)
    (rapl,) = find_rapl(tmp_path).meters
    meter = SharedMeter(rapl, Shares(None, 0.5, 0.5, 0.25, None), "process")
    assert (meter.info.attribution, meter.info.method, meter.fast) == ("process", "rapl", True)
    assert meter.wrap_j == rapl.wrap_j
    assert meter.read().energy_j == 0.0  # the first read only sets where the host counter is
    zone.add_energy_j(4.0)
    assert meter.read().energy_j == pytest.approx(2.0)
    zone.add_energy_j(8.0)  # past the 10 J range: the host counter wraps
    assert meter.read().energy_j == pytest.approx(4.0)
    zone.add_energy_j(2.0)  # no share can be said now: the latest one holds
    assert meter.read().energy_j == pytest.approx(4.5)
    job_j, host_j = meter.totals()
    assert (job_j, host_j) == pytest.approx((4.5, 14.0))


def test_a_shared_power_meter_gives_the_share_of_the_power(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install_fake_nvml(monkeypatch, [SimulatedGPU(has_counter=False)])
    (board,) = find_gpus().meters
    meter = SharedMeter(board, FixedShare(0.25), "attributed")
    try:
        assert meter.read().power_w == pytest.approx(75.0)
        assert meter.read().power_w == pytest.approx(75.0)
        job_j, host_j = meter.totals()
        assert job_j == pytest.approx(host_j * 0.25)
    finally:
        meter.close()


def test_a_share_that_cannot_be_measured_fails_the_meter_as_a_read_error(tmp_path: Path) -> None:
    build_powercap(tmp_path, sockets=1, dram=False)
    (rapl,) = find_rapl(tmp_path).meters

    calls: list[None] = []

    def vanishing() -> float | None:
        if calls:
            raise psutil.NoSuchProcess(1)
        calls.append(None)
        return None

    meter = SharedMeter(rapl, vanishing, "process")
    with pytest.raises(Exception, match="cannot measure the job's share") as caught:
        meter.read()
    assert type(caught.value).__name__ == "MeterReadError"


def test_a_gpu_shared_with_another_process_is_attributed_by_sm_utilisation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """This process at 60 % SM, another at 20 %: the job gets 60 / 80 of the board."""
    install_fake_nvml(monkeypatch, [SimulatedGPU(processes={os.getpid(): 60, 4_000_001: 20})])
    meters = attribute(
        find_gpus().meters, Decision("process", "process", "asked"), ProcessTree()
    ).meters
    try:
        (meter,) = meters
        assert isinstance(meter, SharedMeter)
        assert meter.info.attribution == "attributed"
        meter.read()
        meter.read()
        assert meter.share == pytest.approx(0.75)
    finally:
        close_all(meters)


def test_a_gpu_used_by_this_job_alone_stays_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_nvml(monkeypatch, [SimulatedGPU(processes={os.getpid(): 90})])
    found = find_gpus().meters
    meters = attribute(found, Decision("process", "process", "asked"), ProcessTree()).meters
    try:
        assert meters == found
        assert meters[0].info.attribution == ""
        assert not attribute(found, Decision("process", "process", "asked"), ProcessTree()).notes
    finally:
        close_all(meters)


def test_a_gpu_without_a_per_process_view_stays_whole_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An AMD GPU (amdsmi gives no per-process energy) under ``process``: whole, with a note."""
    install_fake_amdsmi(monkeypatch, [SimulatedAmdGpu(AMD_BDF, 0)])
    found = find_amd_gpus().meters
    attributed = attribute(found, Decision("process", "process", "asked"), ProcessTree())
    try:
        assert attributed.meters == found
        (note,) = attributed.notes
        assert note.startswith("gpu0 (") and "counts it whole" in note
    finally:
        close_all(attributed.meters)


def test_a_mig_slice_is_its_share_of_the_board_labelled_estimate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    slices = [SimulatedMigSlice(slices=4), SimulatedMigSlice(slices=3)]
    install_fake_nvml(monkeypatch, [SimulatedGPU(), SimulatedGPU(mig=True, mig_slices=slices)])
    found = find_gpus(visible=slices[1].uuid)
    try:
        (meter,) = found.meters
        assert isinstance(meter, SharedMeter)
        assert meter.info.attribution == "estimate"
        assert meter.info.device == "gpu0"
        assert "3/7 of the board's energy" in meter.info.detail
        assert meter.share == pytest.approx(3 / 7)
    finally:
        close_all(found.meters)


def test_a_mig_uuid_that_names_no_slice_stays_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    install_fake_nvml(monkeypatch, [SimulatedGPU(mig=True, mig_slices=[SimulatedMigSlice()])])
    found = find_gpus(visible="MIG-00000000-0000-0000-0000-000000000000")
    assert found.meters == []
    assert "MIG mode is enabled" in found.missing[0].reason


def test_a_short_lived_child_counts_for_the_job_though_never_listed_alive() -> None:
    """A worker that burns 0.5 s and exits between two listings still counts (reaped time)."""
    tree = ProcessTree()
    busy = "import time\nend = time.process_time() + 0.5\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", busy], check=True)
    share = tree.cpu_share()
    assert share is not None
    assert share > 0.2


def cgroup_dir(root: Path) -> Path:
    """This process's cgroup v2 directory under a fake sysfs ``root``, created."""
    with open("/proc/self/cgroup", encoding="ascii") as lines:
        entry = next(line[3:].strip() for line in lines if line.startswith("0::"))
    directory = root.joinpath("fs", "cgroup", *entry.strip("/").split("/"))
    directory.mkdir(parents=True, exist_ok=True)
    return directory


@pytest.fixture
def big_node(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A 64-CPU host with nobody else on it and an empty sysfs: ``auto`` finds nothing shared."""
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 64)
    monkeypatch.setattr(psutil, "process_iter", lambda attrs=None: iter(()))
    monkeypatch.setenv("WATTPRINT_SYSFS_ROOT", str(tmp_path))
    return tmp_path


def test_auto_on_a_whole_machine_measures_the_host(big_node: Path) -> None:
    assert decide("auto") == Decision("host", "auto", "the job holds the whole machine")


@pytest.mark.parametrize(
    ("variable", "value", "mode"),
    [
        ("SLURM_CPUS_ON_NODE", "8", "process"),
        ("SLURM_JOB_CPUS_PER_NODE", "16(x2)", "process"),
        ("SLURM_CPUS_ON_NODE", "64", "host"),
    ],
)
def test_auto_under_a_slurm_allocation_smaller_than_the_node_takes_the_process_share(
    big_node: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, mode: str
) -> None:
    monkeypatch.setenv(variable, value)
    decision = decide("auto")
    assert decision.mode == mode
    if mode == "process":
        assert "SLURM allocation holds" in decision.reason
        assert "of this node's 64 CPUs" in decision.reason


@pytest.mark.parametrize(
    ("file", "text", "mode", "said"),
    [
        ("cpu.max", "400000 100000\n", "process", "cpu quota is 4 of the host's 64"),
        ("cpu.max", "max 100000\n", "host", ""),
        ("cpuset.cpus.effective", "0-3,8\n", "process", "cpuset holds 5 of the host's 64"),
        ("cpuset.cpus.effective", "0-63\n", "host", ""),
        # garbage is no evidence of a part: the host, not a nonsense reason
        ("cpu.max", "-1 100000\n", "host", ""),
        ("cpu.max", "max\n", "host", ""),
        ("cpu.max", "banana\n", "host", ""),
        ("cpuset.cpus.effective", "3-1\n", "host", ""),
        ("cpuset.cpus.effective", "0-\n", "host", ""),
        ("cpuset.cpus.effective", "0-3,2-5,1\n", "process", "cpuset holds 6 of the host's 64"),
        ("cpuset.cpus.effective", "0-999999999999\n", "host", ""),
        ("cpuset.cpus.effective", "garbage\n", "host", ""),
    ],
)
def test_auto_in_a_cgroup_smaller_than_the_host_takes_the_process_share(
    big_node: Path, file: str, text: str, mode: str, said: str
) -> None:
    (cgroup_dir(big_node) / file).write_text(text)
    decision = decide("auto")
    assert decision.mode == mode
    assert said in decision.reason


def test_auto_with_another_persons_process_running_takes_the_process_share(
    big_node: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    someone = SimpleNamespace(info={"uids": SimpleNamespace(real=4321), "status": "running"})
    sleeping = SimpleNamespace(info={"uids": SimpleNamespace(real=4322), "status": "sleeping"})
    monkeypatch.setattr(psutil, "process_iter", lambda attrs=None: iter([sleeping, someone]))
    decision = decide("auto")
    assert decision.mode == "process"
    assert "uid 4321" in decision.reason


@pytest.mark.parametrize("asked", ["host", "process"])
def test_an_explicit_attribution_is_kept_whatever_the_machine(asked: Any) -> None:
    assert decide(asked).mode == asked


def test_a_host_counter_that_wrapped_twice_between_reads_is_unwrapped_from_its_power(
    tmp_path: Path,
) -> None:
    """A starved sampler: 25 J in a 10 J range between two reads, at the power seen before."""
    zone = build_powercap(tmp_path, sockets=1, dram=False, max_energy_range_uj=10_000_000)["cpu0"]
    zone.set_energy_uj(0)
    (rapl,) = find_rapl(tmp_path).meters
    meter = SharedMeter(rapl, FixedShare(0.5), "process")
    added_j = 0.0
    for pause_s in (0.0, 0.1, 0.5):  # the last interval: 25 J, two wraps and a half
        then_s = meter.read().t_s
        time.sleep(pause_s)
        joules = 50.0 * (time.monotonic() - then_s) if pause_s else 0.0
        zone.add_energy_j(joules)
        added_j += joules
    meter.read()
    job_j, host_j = meter.totals()
    assert added_j > 2 * 10.0 + 5.0
    assert host_j == pytest.approx(added_j, rel=1e-3)
    assert job_j == pytest.approx(host_j / 2)


def test_a_reset_of_a_shared_counter_is_bridged_and_warned_never_a_silent_zero(
    tmp_path: Path,
) -> None:
    """A GPU reset under attribution: the job's share of the gap is estimated, and said so."""
    with simulated(tmp_path / "none") as (patch, clock):
        patch.setattr(time, "sleep", lambda s: setattr(clock, "now_s", clock.now_s + s))
        gpu = SimulatedAmdGpu(AMD_BDF, 0, power_w=constant_power(200.0), counter_origin_s=0.0)
        install_fake_amdsmi(patch, [gpu])
        (board,) = find_amd_gpus().meters
        notices = Notices(quiet=True)
        meter = SharedMeter(board, FixedShare(0.25), "attributed")
        sampler = Sampler([meter], lambda j, a, b: 0.0, notices, 0.5, 1.0, lambda p: None)
        sampler.poll()
        start = sampler.snapshot()
        gpu.reset_at_s = clock.now_s + 10.2
        for _ in range(40):
            clock.now_s += 0.5
            sampler.poll()
        end = sampler.snapshot()
        sampler.stop()
    used_j = end[1]["gpu0"].energy_j - start[1]["gpu0"].energy_j
    assert used_j == pytest.approx(0.25 * 200.0 * (end[0] - start[0]), rel=1e-3)
    assert any("went backwards" in w for w in notices.messages())
