"""The Keras 3 callback on real ``model.fit`` runs of a tiny model, Keras on its torch backend."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is imported: no TensorFlow needed

import keras
import numpy as np
import pytest

from tests.fake_nvml import SimulatedGPU, constant_power, install_fake_nvml
from tracker import load_run
from tracker.integrations.keras import WattprintCallback

GPU_W = 250.0


def fit(callback: WattprintCallback, epochs: int = 2, samples: int = 32) -> keras.callbacks.History:
    x = np.linspace(-1, 1, samples, dtype="float32").reshape(-1, 1)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    return model.fit(x, 3 * x + 1, epochs=epochs, batch_size=8, verbose=0, callbacks=[callback])


@pytest.fixture(autouse=True)
def gpu(monkeypatch: pytest.MonkeyPatch) -> SimulatedGPU:
    simulated = SimulatedGPU(power_w=constant_power(GPU_W))
    install_fake_nvml(monkeypatch, [simulated])
    return simulated


def test_each_epoch_is_a_row_and_its_figures_join_the_history(tmp_path: Path) -> None:
    assert keras.backend.backend() == "torch"
    callback = WattprintCallback(
        project="keras", log_dir=tmp_path, intensity=400.0, components=["gpu"], verbose=0
    )
    history = fit(callback)
    assert callback.tracker is not None
    epochs = load_run(callback.tracker.run_dir)
    assert list(epochs["epoch"]) == [1, 2] and not epochs["partial"].any()
    for _, row in epochs.iterrows():
        assert row["gpu_energy_j"] == pytest.approx(GPU_W * row["duration_s"], rel=1e-3)
    assert history.history["wattprint/co2_g"] == pytest.approx(list(epochs["co2_g"]))
    assert history.history["wattprint/gpu_energy_j"] == pytest.approx(list(epochs["gpu_energy_j"]))
    assert len(history.history["loss"]) == 2  # the fit's own logs are untouched
    run = json.loads((callback.tracker.run_dir / "run.json").read_text())
    assert run["status"] == "finished"


def test_a_second_fit_with_the_same_callback_is_a_run_of_its_own(tmp_path: Path) -> None:
    callback = WattprintCallback(project="keras", log_dir=tmp_path, intensity=1.0, verbose=0)
    fit(callback)
    first = callback.tracker
    fit(callback, epochs=1)
    assert first is not None and callback.tracker is not None
    assert callback.tracker.run_dir != first.run_dir
    assert len(load_run(first.run_dir)) == 2 and len(load_run(callback.tracker.run_dir)) == 1


def test_work_is_steps_times_the_batch_size_given(tmp_path: Path) -> None:
    callback = WattprintCallback(
        project="keras", log_dir=tmp_path, intensity=1.0, components=["gpu"], verbose=0,
        batch_size=8,
    )  # fmt: skip
    history = fit(callback)
    assert callback.tracker is not None
    epochs = load_run(callback.tracker.run_dir)
    assert list(epochs["samples"]) == [32, 32]  # 4 steps x 8
    assert list(epochs["it_energy_j_per_sample"]) == pytest.approx(list(epochs["it_energy_j"] / 32))
    assert history.history["wattprint/samples"] == [32, 32]
    ragged = WattprintCallback(project="ragged", log_dir=tmp_path, components=["gpu"], verbose=0,
                               batch_size=8)  # fmt: skip
    fit(ragged, epochs=1, samples=30)  # 4 steps, the last of 6: counted as 8 (documented)
    assert ragged.tracker is not None
    assert list(load_run(ragged.tracker.run_dir)["samples"]) == [32]
    unsized = WattprintCallback(project="unsized", log_dir=tmp_path, components=["gpu"], verbose=0)
    fit(unsized, epochs=1)
    assert unsized.tracker is not None
    assert load_run(unsized.tracker.run_dir)["samples"].isna().all()
    with pytest.raises(ValueError, match="batch_size must be an int >= 1"):
        WattprintCallback(batch_size=0)
