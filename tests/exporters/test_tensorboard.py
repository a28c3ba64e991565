"""``TensorBoard``: event files read back with TensorBoard's own EventAccumulator."""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.exporters.runs import make_tracker, run_epochs
from tracker.exporters import TensorBoard


def scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(log_dir))
    accumulator.Reload()
    return {
        tag: [(s.step, s.value) for s in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def test_each_epoch_is_one_step_of_every_figure(tmp_path: Path) -> None:
    log_dir = tmp_path / "tb" / "resnet"
    with make_tracker(tmp_path, [TensorBoard(log_dir)]) as tracker:
        run_epochs(tracker, 3)
    found = scalars(log_dir)
    assert set(found) == {
        "wattprint/facility_energy_kwh", "wattprint/co2_g", "wattprint/it_energy_j",
        "wattprint/gpu_energy_j", "wattprint/cpu_energy_j", "wattprint/duration_s",
    }  # fmt: skip  # no dram: not measured, so not written as 0
    for name in ("co2_g", "it_energy_j", "gpu_energy_j", "duration_s"):
        steps, values = zip(*found[f"wattprint/{name}"], strict=True)
        assert steps == tuple(r.epoch for r in tracker.epochs)
        truth = [getattr(r, name) for r in tracker.epochs]
        assert values == pytest.approx(truth, rel=1e-6), name  # float32 scalars


def test_epochs_are_on_disk_before_the_run_stops(tmp_path: Path) -> None:
    log_dir = tmp_path / "tb"
    with make_tracker(tmp_path, [TensorBoard(str(log_dir))]) as tracker:
        run_epochs(tracker, 2)
        steps = [step for step, _ in scalars(log_dir)["wattprint/co2_g"]]
    assert steps == [1, 2]


def test_a_second_run_writes_a_file_of_its_own_beside_the_first(tmp_path: Path) -> None:
    log_dir = tmp_path / "tb"
    exporter = TensorBoard(log_dir)
    for run_id in ("first", "second"):
        with make_tracker(tmp_path, [exporter], run_id=run_id) as tracker:
            run_epochs(tracker, 1)
    assert len(list(log_dir.glob("events.out.tfevents.*.wattprint"))) == 2


@pytest.mark.parametrize("log_dir", [None, "", 3, b"tb"])
def test_log_dir_must_be_a_path(log_dir: object) -> None:
    with pytest.raises(ValueError, match="log_dir"):
        TensorBoard(log_dir)  # type: ignore[arg-type]


def test_log_dir_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tb").write_text("not a directory")
    with pytest.raises(ValueError, match=r"log_dir .* is a file"):
        TensorBoard(tmp_path / "tb")
