"""``MLflow``: per-epoch metrics, tags and the run's files in a local MLflow file store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient

from tests.exporters.runs import make_tracker, run_epochs
from tracker.exporters import MLflow
from tracker.exporters.base import FIGURES


@pytest.fixture(autouse=True)
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A file store under tmp_path, and no MLflow run left active after the test."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", (tmp_path / "mlruns").as_uri())
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    yield
    while mlflow.active_run() is not None:
        mlflow.end_run()


def test_each_epoch_is_logged_at_its_step_under_the_callbacks_names(tmp_path: Path) -> None:
    exporter = MLflow()
    with make_tracker(tmp_path, [exporter], run_id="logged", location="DE") as tracker:
        run_epochs(tracker, 3)
    run = mlflow.get_run(exporter.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "logged"
    assert mlflow.active_run() is None  # the run it started, it ended
    client = MlflowClient()
    for name in ("co2_g", "it_energy_j", "gpu_energy_j", "cpu_energy_j", "duration_s"):
        history = client.get_metric_history(exporter.mlflow_run_id, f"wattprint/{name}")
        assert [m.step for m in history] == [r.epoch for r in tracker.epochs]
        truth = [getattr(r, name) for r in tracker.epochs]
        assert [m.value for m in history] == pytest.approx(truth, rel=1e-12), name
    assert "wattprint/dram_energy_j" not in run.data.metrics  # not measured: not logged as 0
    summary = tracker.summary
    assert run.data.metrics["wattprint/total_co2_g"] == pytest.approx(summary.co2_g)
    assert run.data.metrics["wattprint/total_epochs"] == 3
    tags = run.data.tags
    assert tags["wattprint.location"] == "DE"
    assert tags["wattprint.pue"] == "1.2"
    assert tags["wattprint.intensity_source"] == summary.intensity_source
    assert tags["wattprint.methods"] == summary.methods == "gpu=power;cpu=power;dram=none"
    artifacts = {a.path for a in client.list_artifacts(exporter.mlflow_run_id, "wattprint")}
    assert {"wattprint/epochs.csv", "wattprint/devices.csv", "wattprint/run.json"} <= artifacts


def test_the_active_run_is_logged_to_and_left_open(tmp_path: Path) -> None:
    with mlflow.start_run(run_name="mine") as mine:
        exporter = MLflow(artifacts=False)
        with make_tracker(tmp_path, [exporter]) as tracker:
            run_epochs(tracker, 2)
        assert exporter.mlflow_run_id == mine.info.run_id
        assert mlflow.active_run() is not None
        assert mlflow.get_run(mine.info.run_id).info.status == "RUNNING"
    run = mlflow.get_run(mine.info.run_id)
    assert run.data.metrics["wattprint/co2_g"] == pytest.approx(tracker.epochs[-1].co2_g)
    assert not MlflowClient().list_artifacts(mine.info.run_id)


def test_figures_are_the_framework_callbacks_figures() -> None:
    assert FIGURES == (
        "facility_energy_kwh", "co2_g", "it_energy_j", "gpu_energy_j", "cpu_energy_j",
        "dram_energy_j", "other_energy_j", "duration_s", "samples", "tokens",
        "it_energy_j_per_sample", "it_energy_j_per_token",
    )  # fmt: skip


def test_artifacts_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match="artifacts"):
        MLflow(artifacts="yes")  # type: ignore[arg-type]


def test_a_start_that_fails_half_way_leaves_no_mlflow_run_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("tracking server refused the tags")

    monkeypatch.setattr(MlflowClient, "log_batch", refuse)
    exporter = MLflow()
    with make_tracker(tmp_path, [exporter]) as tracker:
        run_epochs(tracker, 1)
    assert mlflow.active_run() is None
    assert mlflow.get_run(exporter.mlflow_run_id).info.status == "FINISHED"
    (warning,) = tracker.summary.warnings
    assert "refused the tags" in warning and "left out of this run" in warning


def test_the_default_local_store_works_with_the_extra_s_packages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No tracking URI set: MLflow's own default (an SQLite file in the working directory)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE")
    monkeypatch.chdir(tmp_path)
    exporter = MLflow()
    with make_tracker(tmp_path, [exporter], run_id="default") as tracker:
        run_epochs(tracker, 2)
    assert not [w for w in tracker.summary.warnings if "MLflow" in w]
    history = MlflowClient().get_metric_history(exporter.mlflow_run_id, "wattprint/co2_g")
    assert [m.step for m in history] == [1, 2]
