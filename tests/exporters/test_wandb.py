"""``WandB``: an offline W&B run, read back from the files wandb wrote."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import wandb

from tests.exporters import wandb_records
from tests.exporters.runs import make_tracker, run_epochs
from tracker.exporters import WandB


@pytest.fixture(autouse=True)
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """W&B offline, writing under tmp_path; no run left open, no service left running."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    yield
    if wandb.run is not None:
        wandb.run.finish()
    wandb.teardown()


def run_file(tmp_path: Path) -> Path:
    """The offline run's records, once wandb's service has written them all out."""
    wandb.teardown()
    (found,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    return found


def test_epochs_go_to_the_history_and_totals_to_the_summary(tmp_path: Path) -> None:
    with make_tracker(tmp_path, [WandB()], run_id="wb", location="FR") as tracker:
        run_epochs(tracker, 3)
    assert wandb.run is None  # the run it started, it finished
    path = run_file(tmp_path)
    rows = [row for row in wandb_records.history(path) if "wattprint/epoch" in row]
    assert [row["wattprint/epoch"] for row in rows] == [1, 2, 3]
    for row, record in zip(rows, tracker.epochs, strict=True):
        assert row["wattprint/co2_g"] == pytest.approx(record.co2_g, rel=1e-12)
        assert row["wattprint/it_energy_j"] == pytest.approx(record.it_energy_j, rel=1e-12)
        assert "wattprint/dram_energy_j" not in row  # not measured: not logged as 0
    totals = wandb_records.summary(path)
    assert totals["wattprint/total_co2_g"] == pytest.approx(tracker.summary.co2_g, rel=1e-12)
    assert totals["wattprint/total_epochs"] == 3
    config = wandb_records.config(path)["wattprint"]
    assert config["location"] == "FR" and config["pue"] == 1.2
    assert config["methods"] == "gpu=power;cpu=power;dram=none"


def test_the_active_run_is_logged_to_and_left_running(tmp_path: Path) -> None:
    mine = wandb.init(project="mine", name="mine")
    with make_tracker(tmp_path, [WandB()]) as tracker:
        run_epochs(tracker, 2)
    assert wandb.run is mine
    assert mine.summary["wattprint/epoch"] == 2
    assert mine.summary["wattprint/total_it_energy_j"] == pytest.approx(
        tracker.summary.it_energy_j, rel=1e-12
    )
    mine.log({"loss": 0.5})  # the user's own logging goes on
    mine.finish()
