"""Grid following of a Hopper-like energy counter, through the real Tracker and a simulated NVML.

The simulated counter changes only every 100 ms, a read takes 4 ms (its value taken mid-way),
power usage is the mean of the last second, as NVML behaves on an H100, and the instant power field
lags a little. An edge takes the counter's value at the update before it plus the instant power
over the time since, so an epoch lies within the counter's steps and near the exact energy.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from tests.fake_nvml import (
    SimulatedGPU,
    StepProfile,
    constant_power,
    hopper,
    install_fake_nvml,
    step_profile,
)
from tracker import Tracker
from tracker.measure import grid
from tracker.measure.grid import FollowBudget

EPOCHS_S = (2.5, 1.0, 1.7, 3.0, 1.2)
GAP_S = 0.2


def bursty(t0_s: float, seconds: float) -> StepProfile:
    """Busy and idle stretches of 0.13-0.61 s from ``t0_s`` on, 90-700 W."""
    steps = [(t0_s - 5.0, 90.0)]
    t_s, k = t0_s, 0
    while t_s < t0_s + seconds:
        steps.append((t_s, (450.0 + 37 * k % 250) if k % 2 == 0 else 90.0))
        t_s += 0.13 + (0.17 * k) % 0.48
        k += 1
    return step_profile(steps)


@pytest.fixture
def h100(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimulatedGPU]:
    """One Hopper-like GPU drawing a bursty load for the next 15 s."""
    gpu = hopper(bursty(time.monotonic(), 15.0))
    install_fake_nvml(monkeypatch, [gpu])
    yield gpu


def test_followed_counter_epochs_lie_within_the_counter_steps_and_match_the_exact_energy(
    h100: SimulatedGPU, tmp_path: object
) -> None:
    with Tracker("grid", str(tmp_path), components=["gpu"], intensity=300.0, verbose=0) as t:
        for epoch_s in EPOCHS_S:
            with t.epoch():
                time.sleep(epoch_s)
            time.sleep(GAP_S)
    step_s = h100.counter_step_s
    ours_off_j = counter_off_j = 0.0
    for record in t.epochs:
        start_s, end_s = record.start_s, record.end_s
        # Each edge lies between the counter's values at the updates around it.
        low_j = (h100.counter_mj(end_s) - h100.counter_mj(start_s + step_s)) / 1000.0
        high_j = (h100.counter_mj(end_s + step_s) - h100.counter_mj(start_s)) / 1000.0
        energy_j, bound_j = record.gpu_energy_j, record.devices[0].energy_bound_j
        assert energy_j is not None and bound_j is not None
        assert low_j - 1e-3 <= energy_j <= high_j + 1e-3, record.epoch
        exact_j = h100.energy_j(start_s, end_s)
        assert abs(energy_j - exact_j) <= bound_j + 2e-3, record.epoch  # the mJ counter
        assert record.it_energy_bound_j == bound_j
        if record.epoch > 1:  # the first start edge is cut while the follower calibrates
            counter_j = (h100.counter_mj(end_s) - h100.counter_mj(start_s)) / 1000.0
            ours_off_j += abs(energy_j - exact_j)
            counter_off_j += abs(counter_j - exact_j)
    assert ours_off_j < counter_off_j / 4  # placed inside the steps, not at the last one
    reads_per_s = len(h100.counter_reads_s) / sum(EPOCHS_S)
    assert 8 < reads_per_s < 30  # once per 100 ms window (plus calibration), not back to back


def test_continuous_counter_is_not_followed_and_edges_are_completed_as_before(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    gpu = SimulatedGPU(power_w=constant_power(300.0), read_delay_s=0.004)
    install_fake_nvml(monkeypatch, [gpu])
    with Tracker("plain", str(tmp_path), components=["gpu"], intensity=300.0, verbose=0) as t:
        time.sleep(0.3)
        reads_before = len(gpu.counter_reads_s)
        with t.epoch():
            time.sleep(1.5)
    assert len(gpu.counter_reads_s) - reads_before <= 5  # the sampler's 0.5 s reads only
    record = t.epochs[0]
    assert record.gpu_energy_j == pytest.approx(
        gpu.energy_j(record.start_s, record.end_s), rel=1e-3
    )
    assert not t.summary.warnings


def test_follower_over_its_cpu_budget_stops_and_warns_once(
    h100: SimulatedGPU, monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    monkeypatch.setattr(grid, "BUDGET", FollowBudget(share=1e-9, window_s=0.2))
    with Tracker("budget", str(tmp_path), components=["gpu"], intensity=300.0, verbose=0) as t:
        time.sleep(0.5)
        reads_before = len(h100.counter_reads_s)
        with t.epoch():
            time.sleep(1.5)
    assert len(h100.counter_reads_s) - reads_before <= 5  # back to the sampler's reads
    run = json.loads((t.run_dir / "run.json").read_text())
    budget = [w for w in run["warnings"] if "gpu0" in w and "budget" in w]
    assert len(budget) == 1
    record = t.epochs[0]
    assert record.devices[0].method == "counter"
    assert record.gpu_energy_j is not None and record.gpu_energy_j > 0


def test_gpu_lost_while_followed_is_marked_failed(h100: SimulatedGPU, tmp_path: object) -> None:
    with Tracker("lost", str(tmp_path), components=["gpu"], intensity=300.0, verbose=0) as t:
        for epoch in range(3):
            if epoch == 1:
                h100.fail_after_s = time.monotonic() + 0.3
            with t.epoch():
                time.sleep(1.0)
    methods = [next(d for d in r.devices if d.device == "gpu0").method for r in t.epochs]
    assert methods == ["counter", "failed", "failed"]
    assert t.epochs[2].gpu_energy_j is None
    run = json.loads((t.run_dir / "run.json").read_text())
    assert sum("gpu0" in w and "stopped working" in w for w in run["warnings"]) == 1


def test_epoch_end_returns_while_a_counter_read_is_blocked(
    h100: SimulatedGPU, tmp_path: object
) -> None:
    with Tracker("blocked", str(tmp_path), components=["gpu"], intensity=300.0, verbose=0) as t:
        t.epoch_start()
        time.sleep(1.0)  # calibrated and following by now
        h100.read_delay_s = 0.5
        deadline_s = time.monotonic() + 1.0
        while h100.reads_in_flight == 0 and time.monotonic() < deadline_s:
            time.sleep(0.005)
        time.sleep(0.05)
        assert h100.reads_in_flight > 0
        started_s = time.monotonic()
        record = t.epoch_end()
        took_s = time.monotonic() - started_s
        assert h100.reads_in_flight > 0  # it returned while the read was still blocked
    assert took_s < 0.1
    assert record.gpu_energy_j is not None and record.gpu_energy_j > 0
