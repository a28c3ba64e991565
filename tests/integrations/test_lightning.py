"""The Lightning callback on real ``Trainer.fit`` runs of a tiny model on the CPU, one fake GPU."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset

from tests.fake_nvml import SimulatedGPU, constant_power, install_fake_nvml
from tracker import Tracker, load_run
from tracker.integrations.lightning import WattprintCallback

GPU_W = 250.0


class OfflineLogger(CSVLogger):
    """A logger whose backend is down: it refuses wattprint's figures."""

    def log_metrics(  # type: ignore[override]  # Lightning's Logger and CSVLogger differ
        self, metrics: dict[str, torch.Tensor | float], step: int | None = None
    ) -> None:
        if any(name.startswith("wattprint/") for name in metrics):
            raise ConnectionError("experiment tracker offline")
        super().log_metrics(metrics, step)


class TinyRegression(pl.LightningModule):
    """y = 3x + 1 with one linear layer."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)

    def training_step(self, batch: list[torch.Tensor], batch_index: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fit(tmp_path: Path, callback: WattprintCallback, **trainer_kwargs: Any) -> pl.Trainer:
    """Two epochs of four batches; a CSV logger unless ``logger=`` says otherwise."""
    x = torch.linspace(-1, 1, 32).unsqueeze(1)
    data = DataLoader(TensorDataset(x, 3 * x + 1), batch_size=8)
    settings: dict[str, Any] = {"logger": CSVLogger(tmp_path / "pl-logs", name="tiny")}
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        callbacks=[callback],
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        **(settings | trainer_kwargs),
    )
    trainer.fit(TinyRegression(), data)
    return trainer


@pytest.fixture
def gpu(monkeypatch: pytest.MonkeyPatch) -> SimulatedGPU:
    simulated = SimulatedGPU(power_w=constant_power(GPU_W))
    install_fake_nvml(monkeypatch, [simulated])
    return simulated


def test_each_epoch_is_a_row_and_its_figures_reach_the_trainers_logger(
    tmp_path: Path, gpu: SimulatedGPU
) -> None:
    callback = WattprintCallback(
        project="pl", log_dir=tmp_path / "runs", intensity=400.0, components=["gpu"], verbose=0
    )
    trainer = fit(tmp_path, callback)
    assert callback.tracker is not None
    epochs = load_run(callback.tracker.run_dir)
    assert list(epochs["epoch"]) == [1, 2] and not epochs["partial"].any()
    for _, row in epochs.iterrows():
        assert row["gpu_energy_j"] == pytest.approx(GPU_W * row["duration_s"], rel=1e-3)
        assert row["co2_g"] == pytest.approx(row["facility_energy_kwh"] * 400.0, rel=1e-9)
    assert trainer.logger is not None and trainer.logger.log_dir is not None
    with open(Path(trainer.logger.log_dir) / "metrics.csv", newline="") as handle:
        logged = [r for r in csv.DictReader(handle) if r.get("wattprint/co2_g")]
    assert [float(r["wattprint/co2_g"]) for r in logged] == pytest.approx(list(epochs["co2_g"]))
    assert [float(r["wattprint/facility_energy_kwh"]) for r in logged] == pytest.approx(
        list(epochs["facility_energy_kwh"])
    )
    run = json.loads((callback.tracker.run_dir / "run.json").read_text())
    assert run["status"] == "finished"


def test_a_failing_tracker_or_logger_never_breaks_the_fit(
    tmp_path: Path, gpu: SimulatedGPU, caplog: pytest.LogCaptureFixture
) -> None:
    stopped = Tracker("pl", tmp_path / "runs", intensity=1.0, verbose=0)
    stopped.stop()  # a Tracker that cannot start again
    trainer = fit(tmp_path, WattprintCallback(stopped))
    assert trainer.current_epoch == 2  # the fit ran to its end
    assert any("start failed" in r.getMessage() for r in caplog.records)
    callback = WattprintCallback(project="pl", log_dir=tmp_path / "runs", intensity=1.0, verbose=0)
    trainer = fit(tmp_path, callback, logger=OfflineLogger(tmp_path / "offline"))
    assert trainer.current_epoch == 2 and callback.tracker is not None
    assert len(load_run(callback.tracker.run_dir)) == 2  # measured all the same
    failures = [r for r in caplog.records if "experiment tracker offline" in r.getMessage()]
    assert len(failures) == 1  # reported once, not per epoch
    with pytest.raises(ValueError, match="intensity"):
        WattprintCallback(intensity=-1.0)  # bad arguments: at once, before any fit


def test_a_fit_that_raises_leaves_its_epochs_and_a_failed_status(
    tmp_path: Path, gpu: SimulatedGPU
) -> None:
    class Exploding(TinyRegression):
        def training_step(self, batch: list[torch.Tensor], batch_index: int) -> torch.Tensor:
            if self.current_epoch == 1 and batch_index == 1:  # mid-way through the 2nd epoch
                raise RuntimeError("loss is NaN")
            return super().training_step(batch, batch_index)

    callback = WattprintCallback(project="pl", log_dir=tmp_path / "runs", intensity=1.0, verbose=0)
    x = torch.linspace(-1, 1, 16).unsqueeze(1)
    trainer = pl.Trainer(
        max_epochs=3,
        accelerator="cpu",
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with pytest.raises(RuntimeError, match="loss is NaN"):
        trainer.fit(Exploding(), DataLoader(TensorDataset(x, x), batch_size=8))
    assert callback.tracker is not None
    run = json.loads((callback.tracker.run_dir / "run.json").read_text())
    assert run["status"] == "failed"
    epochs = load_run(callback.tracker.run_dir)
    assert list(epochs["epoch"]) == [1, 2] and list(epochs["partial"]) == [False, True]


class ValidatedRegression(TinyRegression):
    """TinyRegression with a validation loop."""

    def validation_step(self, batch: list[torch.Tensor], batch_index: int) -> torch.Tensor:
        return self.training_step(batch, batch_index)


def test_work_is_every_training_batch_the_trainer_sees(tmp_path: Path, gpu: SimulatedGPU) -> None:
    callback = WattprintCallback(
        project="pl", log_dir=tmp_path / "runs", intensity=400.0, components=["gpu"], verbose=0
    )
    x = torch.linspace(-1, 1, 30).unsqueeze(1)
    data = DataLoader(TensorDataset(x, 3 * x + 1), batch_size=8)  # 8 + 8 + 8 + 6
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        callbacks=[callback],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        accumulate_grad_batches=2,  # micro-batches each count once
        val_check_interval=2,  # validation in the middle of each epoch, too
        num_sanity_val_steps=0,
    )
    trainer.fit(ValidatedRegression(), data, val_dataloaders=data)
    assert trainer.fit_loop.epoch_loop.val_loop.batch_progress.total.completed > 0
    assert callback.tracker is not None
    epochs = load_run(callback.tracker.run_dir)
    assert list(epochs["samples"]) == [30, 30]  # validation batches not counted
    assert epochs["tokens"].isna().all()
    for _, row in epochs.iterrows():
        assert row["it_energy_j_per_sample"] == pytest.approx(row["it_energy_j"] / 30)
    uncounted = WattprintCallback(
        project="off", count_work=False, log_dir=tmp_path / "runs", components=["gpu"], verbose=0
    )
    fit(tmp_path, uncounted)
    assert uncounted.tracker is not None
    assert load_run(uncounted.tracker.run_dir)["samples"].isna().all()
