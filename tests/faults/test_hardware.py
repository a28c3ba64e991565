"""Hardware faults: the figures stay right, or are flagged; never wrong and silent.

GPUs are simulated at the ``pynvml`` boundary and RAPL as a powercap tree in a temporary
directory; the truth is the simulation's exact energy over each epoch's monotonic boundaries.
"""

from __future__ import annotations

import ctypes
import re
import time
from pathlib import Path

import pytest

from backends.gpu.nvidia import find_gpus
from tests.fake_nvml import SimulatedGPU, constant_power, install_fake_nvml, step_profile
from tests.fake_powercap import FakeZone, build_powercap
from tests.faults.simulated import WAIT_S, StallingMeter
from tracker import DeviceEnergy, EpochRecord, Tracker

INTERVAL_S = 0.05


def device(record: EpochRecord, name: str) -> DeviceEnergy:
    return next(d for d in record.devices if d.device == name)


def warnings_about(tracker: Tracker, text: str) -> list[str]:
    return [w for w in tracker.summary.warnings if text in w]


@pytest.fixture
def powercap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeZone]:
    """Two sockets with package and DRAM zones; counters wrap every 20 J."""
    zones = build_powercap(tmp_path / "powercap", sockets=2, max_energy_range_uj=20_000_000)
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(tmp_path / "powercap"))
    return zones


def test_gpus_lost_mid_run_keep_what_they_measured_and_are_flagged_failed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    counter = SimulatedGPU(power_w=constant_power(250.0))
    power_only = SimulatedGPU(name="Tesla P100", power_w=constant_power(150.0), has_counter=False)
    install_fake_nvml(monkeypatch, [counter, power_only])
    with Tracker(
        "lost", tmp_path, components=["gpu"], interval=INTERVAL_S, intensity=300.0, verbose=0
    ) as tracker:
        with tracker.epoch():
            time.sleep(0.2)
        tracker.epoch_start()
        time.sleep(0.2)
        counter.fail_after_s = power_only.fail_after_s = time.monotonic()  # NVML: GPU is lost
        time.sleep(0.2)
        tracker.epoch_end()
        with tracker.epoch():
            time.sleep(0.1)
    whole, losing, after = tracker.epochs
    assert device(whole, "gpu0").energy_j == pytest.approx(
        counter.energy_j(whole.start_s, whole.end_s), rel=1e-3
    )
    last_good_s = max(t for t in counter.counter_reads_s if t < counter.fail_after_s)
    assert device(losing, "gpu0").method == "failed"  # flagged, and exact up to the last read
    assert device(losing, "gpu0").energy_j == pytest.approx(
        counter.energy_j(losing.start_s, last_good_s), rel=1e-3
    )
    assert device(losing, "gpu1").method == "failed"
    for name in ("gpu0", "gpu1"):
        assert device(after, name).method == "failed" and device(after, name).energy_j is None
        assert len(warnings_about(tracker, f"{name} (")) == 1  # warned once, not per sample
    assert after.gpu_energy_j is None and "gpu=failed" in after.methods


def test_an_energy_counter_going_backwards_is_estimated_and_flagged(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gpu = SimulatedGPU(power_w=constant_power(250.0))
    install_fake_nvml(monkeypatch, [gpu])
    with Tracker(
        "reload", tmp_path, components=["gpu"], interval=INTERVAL_S, intensity=300.0, verbose=0
    ) as tracker:
        with tracker.epoch():
            time.sleep(0.2)
        tracker.epoch_start()
        time.sleep(0.15)
        gpu.counter_origin_s = time.monotonic()  # driver reload: the counter starts again at 0
        time.sleep(0.15)
        record = tracker.epoch_end()
    truth_j = gpu.energy_j(record.start_s, record.end_s)
    assert device(record, "gpu0").energy_j == pytest.approx(truth_j, rel=0.01)
    assert warnings_about(tracker, "gpu0: the energy counter went backwards")
    energy_j = device(record, "gpu0").energy_j
    bound_j = device(record, "gpu0").energy_bound_j  # the estimated span widens the bound
    assert energy_j is not None and bound_j is not None and bound_j >= abs(energy_j - truth_j)
    first_bound_j = device(tracker.epochs[0], "gpu0").energy_bound_j
    assert first_bound_j is not None and bound_j > first_bound_j


def test_rapl_wrapping_several_times_between_two_reads_is_unwrapped_and_flagged(
    powercap: dict[str, FakeZone], tmp_path: Path
) -> None:
    zone = powercap["cpu0"]
    with Tracker(
        "wrap", tmp_path, components=["cpu"], interval=60.0, intensity=300.0, verbose=0
    ) as t:
        with t.epoch():  # 10 J in ~0.1 s: the package draws ~100 W
            zone.add_energy_j(10.0)
            time.sleep(0.1)
        t.epoch_start()
        zone.add_energy_j(50.0)  # 2.5 ranges of 20 J: the raw counter moves by 10 J only
        time.sleep(0.5)  # ...which at ~100 W takes 0.5 s
        record = t.epoch_end()
    assert device(record, "cpu0").energy_j == pytest.approx(50.0, rel=1e-3)
    assert warnings_about(t, "cpu0: the counter wrapped 3 times")
    assert device(record, "cpu0").energy_bound_j == pytest.approx(20.0)  # one wrap either way
    assert device(t.epochs[0], "cpu0").energy_bound_j == 0.0  # read at its edges


def test_a_vanishing_powercap_file_fails_its_meter_with_a_warning_and_spares_the_rest(
    powercap: dict[str, FakeZone], tmp_path: Path
) -> None:
    with Tracker(
        "gone", tmp_path, components=["cpu", "dram"], interval=INTERVAL_S, intensity=1, verbose=0
    ) as tracker:
        for step_j in (5.0, 7.0, 2.0):
            with tracker.epoch():
                for zone in ("cpu0", "cpu1", "dram0", "dram1")[: 3 if step_j == 2.0 else 4]:
                    powercap[zone].add_energy_j(step_j)
                if step_j == 7.0:
                    time.sleep(0.1)
                    powercap["dram1"].remove()  # the DRAM zone disappears mid-epoch
    first, vanishing, after = tracker.epochs
    for record, joules in ((first, 5.0), (vanishing, 7.0), (after, 2.0)):
        for name in ("cpu0", "cpu1", "dram0"):
            assert device(record, name).energy_j == pytest.approx(joules, abs=1e-6)
    assert device(first, "dram1").energy_j == pytest.approx(5.0, abs=1e-6)
    assert device(vanishing, "dram1").method == "failed"
    assert device(after, "dram1").method == "failed" and device(after, "dram1").energy_j is None
    (warning,) = warnings_about(tracker, "dram1")
    assert "stopped working" in warning and "energy_uj" in warning


def test_a_starved_sampler_leaves_counter_energy_exact_at_the_epoch_boundary(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    gpu = SimulatedGPU(power_w=step_profile([(t0 - 10, 100.0), (t0 + 0.6, 500.0)]))
    install_fake_nvml(monkeypatch, [gpu])
    stall = StallingMeter()  # first in line: while it hangs, the sampler reads nothing
    meters = [stall, *find_gpus().meters]
    with Tracker(
        "starved", tmp_path, meters=meters, interval=INTERVAL_S, intensity=300.0, verbose=0
    ) as tracker:
        tracker.epoch_start()
        stall.stall()
        assert stall.stalled.wait(WAIT_S)
        time.sleep(max(0.0, t0 + 1.4 - time.monotonic()))  # the board steps up meanwhile
        last_sampler_read_s = max(gpu.counter_reads_s)
        record = tracker.epoch_end()
        stall.release()
    assert record.end_s - last_sampler_read_s > 0.6  # the sampler really was starved
    truth_j = gpu.energy_j(record.start_s, record.end_s)
    assert device(record, "gpu0").energy_j == pytest.approx(truth_j, rel=1e-3)


def test_power_integrated_across_a_gil_hogging_stretch_is_flagged_with_the_gap(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    steps = step_profile([(t0 - 10, 100.0), (t0 + 0.5, 300.0)])
    counter = SimulatedGPU(power_w=steps)
    power_only = SimulatedGPU(name="Tesla P100", power_w=steps, has_counter=False)
    install_fake_nvml(monkeypatch, [counter, power_only])
    with Tracker(
        "gil", tmp_path, components=["gpu"], interval=INTERVAL_S, intensity=300.0, verbose=0
    ) as tracker:
        tracker.epoch_start()
        time.sleep(0.1)
        ctypes.pythonapi.usleep(1_300_000)  # C code holding the GIL: no Python thread runs
        record = tracker.epoch_end()
    (flag,) = warnings_about(tracker, "gpu1: no power reading for")
    gap = re.search(r"no power reading for ([\d.]+) s", flag)
    assert gap is not None and float(gap[1]) >= 1.2
    assert not warnings_about(tracker, "gpu0: no power reading")  # a counter needs no flag
    truth_j = counter.energy_j(record.start_s, record.end_s)
    assert device(record, "gpu0").energy_j == pytest.approx(truth_j, rel=1e-3)
