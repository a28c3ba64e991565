"""Emissions integrate power x intensity over time, through the real tracker and sampler."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.fake_nvml import SimulatedGPU, constant_power, install_fake_nvml, step_profile
from tracker import Tracker
from tracker.units import J_PER_KWH


def write_series(path: Path, points: list[tuple[float, float]]) -> Path:
    path.write_text("unix_s,g_per_kwh\n" + "".join(f"{t!r},{g}\n" for t, g in points))
    return path


def test_intensity_doubling_halfway_gives_one_and_a_half_times_the_first_half_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_nvml(monkeypatch, [SimulatedGPU(power_w=constant_power(250.0))])
    unix_offset = time.time() - time.monotonic()
    start_s = time.monotonic() + 0.3
    half_s = start_s + 0.6
    series = write_series(tmp_path / "grid.csv", [(0.0, 200.0), (half_s + unix_offset, 400.0)])
    with Tracker("ts", tmp_path, intensity=series, components=["gpu"], verbose=0) as tracker:
        time.sleep(max(0.0, start_s - time.monotonic()))
        tracker.epoch_start()
        time.sleep(max(0.0, half_s + 0.6 - time.monotonic()))
        record = tracker.epoch_end()
    assert record.it_energy_j and record.co2_g and record.facility_energy_kwh
    first_s, second_s = half_s - record.start_s, record.end_s - half_s
    expected = 250.0 / J_PER_KWH * (first_s * 200.0 + second_s * 400.0)
    assert record.co2_g == pytest.approx(expected, rel=1e-4)
    # Halves of equal length: 1.5x what the whole epoch would cost at the first half's rate.
    first_half_rate = record.it_energy_j / J_PER_KWH * 200.0
    assert record.co2_g / first_half_rate == pytest.approx(1.5, abs=0.02)
    assert record.intensity_g_per_kwh == pytest.approx(
        expected / record.facility_energy_kwh, rel=1e-4
    )


def test_power_step_coinciding_with_intensity_step_is_weighted_by_when_the_energy_was_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unix_offset = time.time() - time.monotonic()
    start_s = time.monotonic() + 0.3
    step_s = start_s + 0.6
    gpu = SimulatedGPU(power_w=step_profile([(0.0, 100.0), (step_s, 400.0)]))
    install_fake_nvml(monkeypatch, [gpu])
    series = write_series(tmp_path / "grid.csv", [(0.0, 100.0), (step_s + unix_offset, 500.0)])
    with Tracker(
        "step", tmp_path, intensity=series, components=["gpu"], interval=0.05, verbose=0
    ) as tracker:
        time.sleep(max(0.0, start_s - time.monotonic()))
        tracker.epoch_start()
        time.sleep(max(0.0, step_s + 0.6 - time.monotonic()))
        record = tracker.epoch_end()
    assert record.it_energy_j is not None
    truth = (
        gpu.energy_j(record.start_s, step_s) * 100.0 + gpu.energy_j(step_s, record.end_s) * 500.0
    ) / J_PER_KWH
    naive = record.it_energy_j / J_PER_KWH * 300.0  # mean intensity x total energy
    assert record.co2_g == pytest.approx(truth, rel=0.02)
    assert abs(naive - truth) / truth > 0.15  # the naive product would be visibly wrong


def test_cloud_region_applies_the_provider_pue_unless_overridden(tmp_path: Path) -> None:
    with Tracker("aws", tmp_path, location="aws:us-east-1", verbose=0) as tracker:
        pass
    assert tracker.summary.pue == pytest.approx(1.2)
    with Tracker("mine", tmp_path, location="aws:us-east-1", pue=1.05, verbose=0) as tracker:
        pass
    assert tracker.summary.pue == pytest.approx(1.05)
    with Tracker("home", tmp_path, location="DE", verbose=0) as tracker:
        pass
    assert tracker.summary.pue == 1.0


def test_unset_location_uses_the_world_average_and_says_how_to_set_it(tmp_path: Path) -> None:
    with Tracker("world", tmp_path, verbose=0) as tracker:
        pass
    assert (
        "World" in tracker.summary.intensity_source or "WORLD" in tracker.summary.intensity_source
    )
    assert any("WATTPRINT_LOCATION" in w for w in tracker.summary.warnings)
