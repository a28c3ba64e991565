"""Predicting a whole run from its first epochs: exact arithmetic, and through the live tracker."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.fake_nvml import install_no_nvml
from tests.fake_powercap import FakeZone, build_powercap
from tracker import EpochRecord, Tracker
from tracker.estimation.forms import from_run
from tracker.measure.predict import check, predict
from tracker.records import Prediction

KWH = 3.6e6
EPOCH_J = (30.0, 36.0, 27.0, 33.0)  # what the simulated CPU package spends in each epoch
INTENSITY = 300.0
PUE = 1.5


def record(epoch: int, energy_j: float, duration_s: float, partial: bool = False) -> EpochRecord:
    """An epoch at PUE 1.5 and 300 g/kWh, as the tracker would record it."""
    kwh = energy_j * PUE / KWH
    return EpochRecord(
        run_id="r", epoch=epoch, start_utc="", end_utc="", start_s=0.0, end_s=duration_s,
        duration_s=duration_s, gpu_energy_j=None, cpu_energy_j=energy_j, dram_energy_j=None,
        it_energy_j=energy_j, pue=PUE, facility_energy_kwh=kwh, intensity_g_per_kwh=INTENSITY,
        co2_g=kwh * INTENSITY, gpu_avg_w=None, gpu_peak_w=None, methods="cpu=rapl",
        partial=partial,
    )  # fmt: skip


def co2(energy_j: float) -> float:
    return energy_j * PUE / KWH * INTENSITY


def test_after_one_epoch_the_prediction_is_that_epoch_times_the_epochs_with_no_range() -> None:
    p = predict([record(1, 30.0, 2.0)], epochs=10)
    assert (p.epochs, p.based_on_epochs) == (10, 1)
    assert p.it_energy_j == pytest.approx(300.0)
    assert p.it_energy_low_j == p.it_energy_high_j == pytest.approx(300.0)
    assert p.duration_s == pytest.approx(20.0)
    assert p.facility_energy_kwh == pytest.approx(300.0 * PUE / KWH)
    assert p.co2_g == pytest.approx(co2(300.0))


def test_after_three_epochs_the_range_spans_cheapest_to_costliest_remaining_epochs() -> None:
    records = [record(k + 1, e, d) for k, (e, d) in enumerate([(30, 2.0), (36, 2.5), (27, 1.5)])]
    p = predict(records, epochs=10)
    spent = 30.0 + 36.0 + 27.0
    assert p.it_energy_j == pytest.approx(10 * spent / 3)
    assert p.it_energy_low_j == pytest.approx(spent + 7 * 27.0)
    assert p.it_energy_high_j == pytest.approx(spent + 7 * 36.0)
    assert (p.duration_low_s, p.duration_s, p.duration_high_s) == pytest.approx(
        (6.0 + 7 * 1.5, 20.0, 6.0 + 7 * 2.5)
    )
    assert (p.co2_low_g, p.co2_g, p.co2_high_g) == pytest.approx(
        (co2(spent + 7 * 27.0), co2(10 * spent / 3), co2(spent + 7 * 36.0))
    )


def test_partial_epochs_are_left_out_of_the_prediction() -> None:
    p = predict([record(1, 30.0, 2.0), record(2, 5.0, 0.2, partial=True)], epochs=4)
    assert p.based_on_epochs == 1 and p.it_energy_j == pytest.approx(120.0)


def test_check_compares_per_epoch_when_the_run_stopped_early() -> None:
    p = predict([record(1, 30.0, 2.0), record(2, 30.0, 2.0)], epochs=10)
    early = check(p, [record(k, 33.0, 2.0) for k in (1, 2, 3, 4)])
    assert early is not None and early.epochs_run == 4
    assert early.energy_error == pytest.approx(0.1)  # 33 J an epoch against 30 J predicted
    assert early.energy_in_range is None  # only a full run is held against the range
    full = check(p, [record(k, 30.0, 2.0) for k in range(1, 11)])
    assert full is not None and full.energy_error == pytest.approx(0.0) and full.energy_in_range


@pytest.fixture
def cpu_zones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeZone]:
    """One simulated CPU package whose counter moves only when a test adds energy; no GPU."""
    install_no_nvml(monkeypatch)
    root = tmp_path / "powercap"
    zones = build_powercap(root, sockets=1)
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(root))
    return zones


def run_epochs(tracker: Tracker, zone: FakeZone, energies: Sequence[float]) -> None:
    with tracker:
        for joules in energies:
            tracker.epoch_start()
            zone.add_energy_j(joules)
            time.sleep(0.02)
            tracker.epoch_end()


def recorded_prediction(tracker: Tracker) -> Prediction:
    document = json.loads((tracker.run_dir / "run.json").read_text())["prediction"]
    document.pop("check")
    return Prediction(**document)


@pytest.mark.parametrize("before", [1, 3])
def test_tracker_predicts_once_after_epochs_before_pred_and_records_it(
    cpu_zones: dict[str, FakeZone],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    before: int,
) -> None:
    tracker = Tracker(
        "pred", tmp_path, components=["cpu"], intensity=INTENSITY, pue=PUE, interval=60.0,
        epochs=10, epochs_before_pred=before,
    )  # fmt: skip
    run_epochs(tracker, cpu_zones["cpu0"], EPOCH_J)
    seen = EPOCH_J[:before]
    remaining = 10 - before
    p = recorded_prediction(tracker)
    assert p.based_on_epochs == before
    assert p.it_energy_j == pytest.approx(
        10 * sum(seen) / before, rel=1e-6
    )  # IT energy, before PUE
    assert p.it_energy_low_j == pytest.approx(sum(seen) + remaining * min(seen), rel=1e-6)
    assert p.it_energy_high_j == pytest.approx(sum(seen) + remaining * max(seen), rel=1e-6)
    assert p.facility_energy_kwh == pytest.approx(p.it_energy_j * PUE / KWH, rel=1e-6)
    assert p.co2_g == pytest.approx(co2(p.it_energy_j), rel=1e-6)
    err = capsys.readouterr().err
    assert err.count("wattprint prediction for 10 epochs") == 1
    assert tracker.summary.prediction == p
    comparison = tracker.summary.prediction_check
    assert comparison is not None and comparison.epochs_run == len(EPOCH_J)
    expected = (sum(EPOCH_J) / len(EPOCH_J)) / (sum(seen) / before) - 1
    assert comparison.energy_error == pytest.approx(expected, rel=1e-6)
    assert "actual vs predicted per epoch (4 of 10 epochs)" in err


def test_the_estimate_module_reads_the_recorded_prediction_as_it_energy(
    cpu_zones: dict[str, FakeZone], tmp_path: Path
) -> None:
    tracker = Tracker(
        "pred", tmp_path, components=["cpu"], intensity=INTENSITY, pue=PUE, verbose=0, epochs=4
    )
    run_epochs(tracker, cpu_zones["cpu0"], EPOCH_J[:2])
    rows = from_run(tracker.run_dir, intensity=100.0)
    predicted = next(r for r in rows if r.label == "predicted full run")
    assert predicted.energy_j == pytest.approx(4 * EPOCH_J[0], rel=1e-6)
    assert predicted.co2_g == pytest.approx(4 * EPOCH_J[0] * PUE / KWH * 100.0, rel=1e-6)


def test_without_epochs_or_with_epochs_before_pred_0_nothing_is_predicted(
    cpu_zones: dict[str, FakeZone], tmp_path: Path
) -> None:
    cases: list[dict[str, Any]] = [{}, {"epochs": 3, "epochs_before_pred": 0}]
    for kwargs in cases:
        tracker = Tracker("none", tmp_path, components=["cpu"], intensity=1.0, verbose=0, **kwargs)
        run_epochs(tracker, cpu_zones["cpu0"], EPOCH_J[:2])
        assert json.loads((tracker.run_dir / "run.json").read_text())["prediction"] is None
        assert tracker.summary.prediction is None and tracker.summary.prediction_check is None


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"epochs": 0}, "epochs must be an int >= 1"),
        ({"epochs": 2.5}, "epochs must be an int >= 1"),
        ({"epochs": True}, "epochs must be an int >= 1"),
        ({"epochs": 5, "epochs_before_pred": -1}, "epochs_before_pred must be an int >= 0"),
        ({"epochs": 5, "epochs_before_pred": 6}, "epochs_before_pred must be at most epochs"),
    ],
)
def test_bad_prediction_arguments_name_the_argument(kwargs: dict[str, Any], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        Tracker(intensity=1.0, verbose=0, **kwargs)
