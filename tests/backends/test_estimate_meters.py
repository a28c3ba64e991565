"""The CPU, DRAM and GPU estimate meters, with psutil and /proc/cpuinfo faked at their boundary.

``FakeMachine`` stands in for ``psutil.cpu_times`` and ``psutil.cpu_count``: a machine whose number
of busy logical CPUs follows a step profile over ``time.monotonic()``, so the busy CPU-seconds
between any two moments, and with them the exact estimate, are known.
"""

from __future__ import annotations

import errno
import platform
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest

from backends.base import (
    Found,
    Meter,
    MeterError,
    MeterPermissionError,
    MeterReadError,
    MeterUnavailable,
    Missing,
    Reading,
)
from backends.cpu import cpuinfo as cpuinfo_module
from backends.cpu.estimate import DEFAULT_CPU_TDP_W, CpuEstimateMeter, find_cpu_estimate
from backends.estimate import EstimateMeter
from backends.gpu.estimate import GpuEstimateMeter
from backends.memory.estimate import DEFAULT_WATTS_PER_DIMM, find_memory_estimate
from tests.fake_nvml import StepProfile, install_no_nvml, step_profile
from tracker import Tracker

GIB = 1024**3
CLOSE = 1e-2  # the fake machine and the meter read the clock up to ~0.1 ms apart


class FakeMachine:
    """``psutil.cpu_times`` of a machine with ``cpus`` logical CPUs, ``busy(t)`` of them busy.

    Busy time is spread over user, nice, system, irq and softirq; guest time grows inside user
    and nice (as Linux counts it); the rest of the CPUs' time is idle, iowait and, for the share
    ``steal``, stolen by a hypervisor. ``shift_s`` is added to the busy time, for counters that
    jitter backwards or arrive in a burst.
    """

    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, cpus: int, busy: StepProfile, steal: float = 0.0
    ) -> None:
        self.cpus = cpus
        self.busy = busy
        self.steal = steal
        self.origin_s = time.monotonic()
        self.shift_s = 0.0
        self._times_type = type(psutil.cpu_times())
        monkeypatch.setattr(psutil, "cpu_times", self.cpu_times)
        monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: cpus)

    def busy_s(self, t0_s: float, t1_s: float) -> float:
        """The busy CPU-seconds, summed over all CPUs, between two monotonic times."""
        return self.busy.energy_j(t0_s, t1_s)  # the profile's integral: busy CPUs x seconds

    def cpu_times(self, percpu: bool = False) -> Any:
        assert not percpu
        now_s = time.monotonic()
        busy = self.busy_s(self.origin_s, now_s) + self.shift_s
        rest = self.cpus * (now_s - self.origin_s) - busy
        fields = {
            "user": 1000.0 + 0.5 * busy,
            "nice": 20.0 + 0.1 * busy,
            "system": 300.0 + 0.3 * busy,
            "irq": 5.0 + 0.05 * busy,
            "softirq": 7.0 + 0.05 * busy,
            "guest": 40.0 + 0.2 * busy,  # part of user
            "guest_nice": 2.0 + 0.05 * busy,  # part of nice
            "idle": 9000.0 + (0.9 - self.steal) * rest,
            "iowait": 60.0 + 0.1 * rest,
            "steal": 30.0 + self.steal * rest,
        }
        names = self._times_type._fields
        return self._times_type(**{name: fields.get(name, 0.0) for name in names})


def busy_machine(
    monkeypatch: pytest.MonkeyPatch, cpus: int = 4, busy: float = 4.0, steal: float = 0.0
) -> FakeMachine:
    return FakeMachine(monkeypatch, cpus, step_profile([(0.0, busy)]), steal)


def cpuinfo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str, sockets: int = 1) -> None:
    blocks = [
        f"processor\t: {i}\nmodel name\t: {model}\nphysical id\t: {i % sockets}\n"
        for i in range(2 * sockets)
    ]
    path = tmp_path / "cpuinfo"
    path.write_text("\n".join(blocks), encoding="utf-8")
    monkeypatch.setattr(cpuinfo_module, "CPUINFO_PATH", path)


def estimate(found: Found) -> EstimateMeter:
    """The one estimate meter ``found`` holds."""
    (meter,) = found.meters
    assert isinstance(meter, EstimateMeter)
    return meter


def joules(reading: Reading) -> float:
    assert reading.power_w is None and reading.energy_j is not None
    return reading.energy_j


def average_w(meter: Meter, seconds: float = 0.05) -> float:
    """The meter's average power over the next ``seconds``, from two reads of its counter."""
    first = meter.read()
    time.sleep(seconds)
    second = meter.read()
    return (joules(second) - joules(first)) / (second.t_s - first.t_s)


def test_cpu_estimate_first_interval_is_right_when_read_on_another_thread() -> None:
    # Discovery runs on one thread, the sampler reads on another: the first interval must still
    # get the machine's utilisation (it used to read 0 W there). Real psutil, a real busy thread.
    meter = estimate(find_cpu_estimate(tdp_w=100.0))
    stop = threading.Event()

    def spin() -> None:
        while not stop.is_set():
            pass

    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    readings: list[Reading] = []

    def read_later() -> None:
        time.sleep(0.4)
        readings.append(meter.read())

    reader = threading.Thread(target=read_later)
    reader.start()
    reader.join(timeout=10)
    stop.set()
    spinner.join(timeout=10)

    (first,) = readings
    elapsed_s = first.t_s - meter.start_s
    one_cpu_w = 100.0 / (psutil.cpu_count() or 1)
    assert first.energy_j is not None
    assert 0.5 * one_cpu_w * elapsed_s < first.energy_j <= 100.0 * elapsed_s + 1e-9


def test_first_epoch_gets_the_cpu_energy_of_its_utilisation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The run the issue describes: the meter is made on the training thread, the sampler thread
    # reads it within the first epoch, and the epoch is shorter than two sampling intervals.
    install_no_nvml(monkeypatch)
    busy_machine(monkeypatch, cpus=4, busy=2.0)
    meters = find_cpu_estimate(tdp_w=100.0).meters
    with (
        Tracker("busy", tmp_path, intensity=100.0, interval=0.25, meters=meters, verbose=0) as run,
        run.epoch(),
    ):
        time.sleep(0.4)
    (record,) = run.epochs
    assert record.cpu_energy_j == pytest.approx(100.0 * 2 / 4 * record.duration_s, rel=1e-2)


def test_cpu_estimate_is_tdp_times_busy_cpu_seconds_per_logical_cpu(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Guest time grows inside user time here, and steal beside it: neither may add to busy time.
    t0 = time.monotonic()
    busy = step_profile([(t0, 1.0), (t0 + 0.1, 3.0)])
    machine = FakeMachine(monkeypatch, cpus=4, busy=busy, steal=0.2)
    meter = estimate(find_cpu_estimate(tdp_w=200.0))

    time.sleep(0.05)
    first = meter.read()  # the first interval runs from the meter's creation
    time.sleep(0.1)
    second = meter.read()

    expected_first_j = 200.0 * machine.busy_s(meter.start_s, first.t_s) / 4
    assert joules(first) == pytest.approx(expected_first_j, rel=CLOSE)
    expected_j = 200.0 * machine.busy_s(first.t_s, second.t_s) / 4
    assert joules(second) - joules(first) == pytest.approx(expected_j, rel=CLOSE)
    assert expected_j > 200.0 * 1 / 4 * 0.1  # the step to 3 busy CPUs is inside the interval


def test_steal_and_iowait_time_is_not_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    # A VM whose virtual CPUs wait on I/O or on the hypervisor draws nothing for this machine.
    busy_machine(monkeypatch, busy=0.0, steal=0.5)
    meter = estimate(find_cpu_estimate(tdp_w=200.0))
    before = psutil.cpu_times()
    time.sleep(0.02)
    after = psutil.cpu_times()
    assert after.steal > before.steal and after.iowait > before.iowait

    assert joules(meter.read()) == 0.0


def test_cpu_estimate_counter_never_goes_back_when_cpu_times_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    machine = busy_machine(monkeypatch, cpus=2, busy=1.0)
    meter = estimate(find_cpu_estimate(tdp_w=100.0))
    time.sleep(0.02)
    before_j = joules(meter.read())

    machine.shift_s = -0.5  # some kernels report busy time a little lower on a later read
    after = meter.read()

    assert before_j > 0 and joules(after) == before_j
    assert meter.wrap_j is None


def test_cpu_estimate_never_shows_more_than_tdp_and_loses_no_busy_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Busy time arrives in clock ticks: a short interval may see more than its length of it.
    machine = busy_machine(monkeypatch, cpus=2, busy=0.0)
    meter = estimate(find_cpu_estimate(tdp_w=100.0))
    machine.shift_s = 0.2  # 0.2 CPU-s at once: 10 J of the model

    burst = meter.read()
    assert joules(burst) <= 100.0 * (burst.t_s - meter.start_s) + 1e-9
    time.sleep(0.15)  # enough time for 10 J at 100 W
    assert joules(meter.read()) == pytest.approx(100.0 * 0.2 / 2)


def test_cpu_estimate_meter_is_a_fast_counter_that_never_wraps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo(tmp_path, monkeypatch, "AMD EPYC 7763 64-Core Processor")
    busy_machine(monkeypatch, cpus=4, busy=2.0)
    found = find_cpu_estimate()
    assert found.missing == []
    (meter,) = found.meters
    assert (meter.info.component, meter.info.device) == ("cpu", "cpu")
    assert (meter.info.method, meter.info.host_level) == ("estimate", True)
    assert meter.fast is True  # read exactly at epoch edges; no follower thread
    assert (meter.wrap_j, meter.max_power_w) == (None, 280.0)
    assert meter.info.model == "AMD EPYC 7763 64-Core Processor"
    assert "280 W (AMD EPYC 7763)" in meter.info.detail
    assert average_w(meter) == pytest.approx(280.0 * 2 / 4, rel=CLOSE)


def test_cpu_estimate_multiplies_tdp_by_socket_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo(tmp_path, monkeypatch, "Intel(R) Xeon(R) Platinum 8480+", sockets=2)
    busy_machine(monkeypatch)
    meter = estimate(find_cpu_estimate())
    assert average_w(meter) == pytest.approx(700.0, rel=CLOSE)
    assert "x 2 sockets" in meter.info.detail


def test_unknown_cpu_uses_the_default_tdp_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo(tmp_path, monkeypatch, "QEMU Virtual CPU")
    busy_machine(monkeypatch)
    meter = estimate(find_cpu_estimate())
    assert meter.info.detail.startswith(
        f"TDP unknown for QEMU Virtual CPU, assumed {DEFAULT_CPU_TDP_W:g} W"
    )
    assert average_w(meter) == pytest.approx(DEFAULT_CPU_TDP_W, rel=CLOSE)


def test_missing_cpuinfo_falls_back_to_platform_processor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cpuinfo_module, "CPUINFO_PATH", tmp_path / "absent")
    monkeypatch.setattr(platform, "processor", lambda: "Intel Core i9-13900K")
    busy_machine(monkeypatch)
    meter = estimate(find_cpu_estimate())
    assert meter.info.model == "Intel Core i9-13900K"
    assert average_w(meter) == pytest.approx(125.0, rel=CLOSE)


def test_overrides_fix_tdp_and_utilisation_without_touching_psutil(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo(tmp_path, monkeypatch, "AMD EPYC 7763")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a given utilisation must not read the CPU times")

    monkeypatch.setattr(psutil, "cpu_times", refuse)
    meter = estimate(find_cpu_estimate(tdp_w=200.0, utilisation=0.25))
    time.sleep(0.02)
    reading = meter.read()
    assert joules(reading) == pytest.approx(200.0 * 0.25 * (reading.t_s - meter.start_s))
    assert "TDP 200 W given" in meter.info.detail
    assert "utilisation 0.25 (given)" in meter.info.detail


def test_tdp_override_with_measured_utilisation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cpuinfo(tmp_path, monkeypatch, "QEMU Virtual CPU")
    busy_machine(monkeypatch, cpus=10, busy=3.0)
    meter = estimate(find_cpu_estimate(tdp_w=100.0))
    assert average_w(meter) == pytest.approx(30.0, rel=CLOSE)


@pytest.mark.parametrize("tdp_w", [0.0, -5.0, float("nan"), float("inf"), "100", True])
def test_invalid_tdp_override_is_rejected_by_name(tdp_w: Any) -> None:
    with pytest.raises(ValueError, match="tdp_w must be a finite number of W > 0"):
        find_cpu_estimate(tdp_w=tdp_w)


@pytest.mark.parametrize("utilisation", [-0.1, 1.01, float("nan"), "0.5", True])
def test_invalid_utilisation_override_is_rejected_by_name(utilisation: Any) -> None:
    with pytest.raises(ValueError, match="utilisation must be a number between 0 and 1"):
        find_cpu_estimate(utilisation=utilisation)


@pytest.mark.parametrize(
    ("error", "kind", "cause"),
    [
        (
            FileNotFoundError(errno.ENOENT, "No such file or directory", "/proc/stat"),
            MeterUnavailable,
            "/proc/stat: No such file or directory (ENOENT)",
        ),
        (
            PermissionError(errno.EACCES, "Permission denied", "/proc/stat"),
            MeterPermissionError,
            "/proc/stat: Permission denied (EACCES)",
        ),
        (
            ValueError("could not convert string to float: 'x'"),
            MeterReadError,
            "could not convert string to float: 'x'",
        ),
    ],
)
def test_unreadable_cpu_times_give_missing_at_discovery_and_the_right_meter_error_later(
    monkeypatch: pytest.MonkeyPatch, error: Exception, kind: type[MeterError], cause: str
) -> None:
    busy_machine(monkeypatch)
    meter = estimate(find_cpu_estimate(tdp_w=100.0))

    def unreadable(percpu: bool = False) -> Any:
        raise error

    monkeypatch.setattr(psutil, "cpu_times", unreadable)

    with pytest.raises(MeterError) as raised:
        meter.read()
    assert type(raised.value) is kind
    assert str(raised.value) == f"cpu: cannot read the CPU times: {cause}"
    assert raised.value.__cause__ is error
    assert find_cpu_estimate(tdp_w=100.0).missing == [
        Missing("cpu", "cpu", f"no CPU estimate: cpu: cannot read the CPU times: {cause}")
    ]


def test_uncountable_cpus_give_missing_at_discovery_and_meter_read_error_when_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    busy_machine(monkeypatch)
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: None)

    with pytest.raises(MeterReadError, match=r"^cpu: psutil cannot count the logical CPUs$"):
        CpuEstimateMeter(100.0, "Intel Xeon Gold 6130", "measured", utilisation=None)
    assert find_cpu_estimate(tdp_w=100.0).missing == [
        Missing("cpu", "cpu", "no CPU estimate: cpu: psutil cannot count the logical CPUs")
    ]


def test_simulated_cpu_draws_tdp_times_the_given_utilisation() -> None:
    meter = CpuEstimateMeter(100.0, "Intel Xeon Gold 6130", "simulated", utilisation=0.5)
    assert (meter.fast, meter.wrap_j) == (True, None)
    assert average_w(meter) == pytest.approx(50.0)


def test_memory_estimate_assumes_32_gb_modules_at_3_w_each_without_edac(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("WATTPRINT_SYSFS_ROOT", str(tmp_path))  # no EDAC tree
    monkeypatch.setattr(
        psutil, "virtual_memory", lambda: SimpleNamespace(total=64 * GIB, used=10 * GIB)
    )
    meter = estimate(find_memory_estimate())
    assert meter.info.component == "dram"
    assert meter.info.device == "dram"
    assert meter.info.method == "estimate"
    assert meter.info.host_level is True
    assert (meter.fast, meter.wrap_j) == (True, None)
    assert meter.info.detail == "64.0 GB installed, assumed 2 x 32 GB DIMMs x 3 W"
    time.sleep(0.02)
    reading = meter.read()
    elapsed_s = reading.t_s - meter.start_s
    assert joules(reading) == pytest.approx(2 * DEFAULT_WATTS_PER_DIMM * elapsed_s)


@pytest.mark.parametrize(("total_gb", "watts"), [(1, 3.0), (16, 3.0), (2048, 96.0), (8192, 96.0)])
def test_memory_estimate_stays_bounded_on_large_memory_nodes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, total_gb: int, watts: float
) -> None:
    """A 2 TB node is 32 modules at most (96 W), not 763 W as 0.3725 W/GB gave."""
    monkeypatch.setenv("WATTPRINT_SYSFS_ROOT", str(tmp_path))
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=total_gb * GIB))
    assert estimate(find_memory_estimate()).max_power_w == watts


def test_memory_estimate_counts_the_modules_edac_lists(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Populated dimm entries count; an empty slot (size 0) does not; memory size is not read."""
    monkeypatch.setenv("WATTPRINT_SYSFS_ROOT", str(tmp_path))
    for controller, dimm, size_mb in [("mc0", 0, 16384), ("mc0", 1, 16384), ("mc1", 0, 0)]:
        entry = tmp_path / "devices/system/edac/mc" / controller / f"dimm{dimm}"
        entry.mkdir(parents=True)
        (entry / "size").write_text(f"{size_mb}\n")
    (tmp_path / "devices/system/edac/mc/mc1/dimm1").mkdir()  # listed, size unreadable: counted

    def unreadable() -> Any:
        raise AssertionError("the memory size is not needed where EDAC counts the modules")

    monkeypatch.setattr(psutil, "virtual_memory", unreadable)
    meter = estimate(find_memory_estimate(watts_per_dimm=2.5))
    assert meter.info.detail == "3 DIMMs (EDAC) x 2.5 W"
    assert average_w(meter) == pytest.approx(7.5)


def test_gpu_estimate_is_watts_times_utilisation_over_time() -> None:
    meter = GpuEstimateMeter("NVIDIA A100", 300.0, 0.8)
    assert (meter.fast, meter.wrap_j, meter.max_power_w) == (True, None, 240.0)
    time.sleep(0.02)
    reading = meter.read()
    assert joules(reading) == pytest.approx(240.0 * (reading.t_s - meter.start_s))


def test_unreadable_memory_size_gives_missing_dram_not_an_exception(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unreadable() -> Any:
        raise PermissionError(errno.EACCES, "Permission denied", "/proc/meminfo")

    monkeypatch.setattr(psutil, "virtual_memory", unreadable)

    assert find_memory_estimate() == Found(
        missing=[
            Missing(
                "dram",
                "dram",
                "no DRAM estimate: cannot read the memory size: "
                "[Errno 13] Permission denied: '/proc/meminfo'",
            )
        ]
    )


@pytest.mark.parametrize("watts_per_dimm", [0.0, -1.0, float("nan"), float("inf"), "3"])
def test_invalid_watts_per_dimm_is_rejected_by_name(watts_per_dimm: Any) -> None:
    with pytest.raises(ValueError, match="watts_per_dimm must be a finite number of W > 0"):
        find_memory_estimate(watts_per_dimm=watts_per_dimm)


@pytest.mark.parametrize(
    ("watts", "utilisation", "message"),
    [
        (-1.0, 0.5, "watts must be a finite number of W >= 0"),
        (float("inf"), 0.5, "watts must be a finite number of W >= 0"),
        (True, 0.5, "watts must be a finite number of W >= 0"),
        (300.0, 1.5, "utilisation must be a number between 0 and 1"),
        (300.0, "full", "utilisation must be a number between 0 and 1"),
    ],
)
def test_invalid_gpu_estimate_figures_are_rejected_by_name(
    watts: Any, utilisation: Any, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        GpuEstimateMeter("NVIDIA A100", watts, utilisation)


def test_gpu_estimate_of_an_idle_gpu_draws_nothing() -> None:
    assert average_w(GpuEstimateMeter("NVIDIA A100", 0, 0.5)) == 0.0
