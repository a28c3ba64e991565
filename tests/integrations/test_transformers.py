"""The transformers callback on real ``Trainer.train`` runs of a tiny BERT built from a config.

No download: the model is a one-layer BERT 8 units wide made from ``BertConfig``, the data
random token ids in memory; the CPU trains it, one simulated GPU is measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from tests.fake_nvml import SimulatedGPU, constant_power, install_fake_nvml
from tracker import load_run
from tracker.integrations.transformers import WattprintCallback

GPU_W = 250.0
SAMPLES, BATCH = 16, 4  # four optimizer steps an epoch


class TokenData(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    """Random sequences of 8 token ids with a 0/1 label."""

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 32, (SAMPLES, 8), generator=generator)
        self.labels = torch.randint(0, 2, (SAMPLES,), generator=generator)

    def __len__(self) -> int:
        return SAMPLES

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.labels[index]}


def train(
    tmp_path: Path,
    callback: WattprintCallback,
    data: torch.utils.data.Dataset[dict[str, torch.Tensor]] | None = None,
    **settings: Any,
) -> Trainer:
    config = BertConfig(
        vocab_size=32,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
    )
    arguments = TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        num_train_epochs=2,
        per_device_train_batch_size=BATCH,
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        **settings,
    )
    trainer = Trainer(
        model=BertForSequenceClassification(config),
        args=arguments,
        train_dataset=data if data is not None else TokenData(),
        eval_dataset=TokenData() if "eval_strategy" in settings else None,
        callbacks=[callback],
    )
    trainer.train()
    return trainer


@pytest.fixture(autouse=True)
def gpu(monkeypatch: pytest.MonkeyPatch) -> SimulatedGPU:
    simulated = SimulatedGPU(power_w=constant_power(GPU_W))
    install_fake_nvml(monkeypatch, [simulated])
    return simulated


def tracker_kwargs(tmp_path: Path) -> dict[str, Any]:
    return {"log_dir": tmp_path / "runs", "intensity": 400.0, "components": ["gpu"], "verbose": 0}


def test_each_epoch_is_a_row_and_its_figures_join_the_log_history(tmp_path: Path) -> None:
    callback = WattprintCallback(project="hf", **tracker_kwargs(tmp_path))
    trainer = train(tmp_path, callback)
    assert callback.tracker is not None
    epochs = load_run(callback.tracker.run_dir)
    assert list(epochs["epoch"]) == [1, 2] and not epochs["partial"].any()
    for _, row in epochs.iterrows():
        assert row["gpu_energy_j"] == pytest.approx(GPU_W * row["duration_s"], rel=1e-3)
    logged = [e for e in trainer.state.log_history if "wattprint/co2_g" in e]
    assert [e["wattprint/co2_g"] for e in logged] == pytest.approx(list(epochs["co2_g"]))
    assert [e["epoch"] for e in logged] == pytest.approx([1.0, 2.0])
    run = json.loads((callback.tracker.run_dir / "run.json").read_text())
    assert run["status"] == "finished"


def test_every_n_steps_cuts_a_record_per_window_of_steps(tmp_path: Path) -> None:
    callback = WattprintCallback(project="hf", every_n_steps=3, **tracker_kwargs(tmp_path))
    trainer = train(tmp_path, callback)
    assert callback.tracker is not None
    epochs = load_run(callback.tracker.run_dir)
    assert len(epochs) == 3  # steps 1-3, 4-6, and the last two (7-8)
    logged = [e["step"] for e in trainer.state.log_history if "wattprint/it_energy_j" in e]
    assert logged == [3, 6, 8]
    with pytest.raises(ValueError, match="every_n_steps"):
        WattprintCallback(every_n_steps=0)


class PaddedData(TokenData):
    """TokenData with an attention mask: sample i has 8 - i % 4 real tokens (2 ... 8 of them)."""

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        mask = (torch.arange(8) < 8 - index % 4).long()
        return super().__getitem__(index) | {"attention_mask": mask}


def test_work_is_the_training_batches_samples_and_unmasked_tokens(tmp_path: Path) -> None:
    callback = WattprintCallback(project="hf", **tracker_kwargs(tmp_path))
    trainer = train(tmp_path, callback, PaddedData(), eval_strategy="steps", eval_steps=2)
    assert callback.tracker is not None
    epochs = load_run(callback.tracker.run_dir)
    real_tokens = sum(8 - i % 4 for i in range(SAMPLES))  # 104: padding left out
    assert list(epochs["samples"]) == [SAMPLES, SAMPLES]  # evaluation batches not counted
    assert list(epochs["tokens"]) == [real_tokens, real_tokens]
    for _, row in epochs.iterrows():
        assert row["it_energy_j_per_sample"] == pytest.approx(row["it_energy_j"] / SAMPLES)
        assert row["it_energy_j_per_token"] == pytest.approx(row["it_energy_j"] / real_tokens)
    logged = [e for e in trainer.state.log_history if "wattprint/samples" in e]
    assert [e["wattprint/tokens"] for e in logged] == [real_tokens, real_tokens]


def test_tokens_are_the_trainers_own_count_when_it_keeps_one(tmp_path: Path) -> None:
    callback = WattprintCallback(project="hf", **tracker_kwargs(tmp_path))
    trainer = train(tmp_path, callback, PaddedData(), include_num_input_tokens_seen="all")
    assert callback.tracker is not None
    epochs = load_run(callback.tracker.run_dir)
    assert list(epochs["tokens"]) == [SAMPLES * 8, SAMPLES * 8]  # "all": padding included
    assert trainer.state.num_input_tokens_seen == 2 * SAMPLES * 8


def test_windows_of_steps_count_their_own_work_and_counting_can_be_off(tmp_path: Path) -> None:
    callback = WattprintCallback(project="hf", every_n_steps=3, **tracker_kwargs(tmp_path))
    counted = train(tmp_path, callback).model
    assert counted is not None and not counted._forward_pre_hooks  # removed at the end
    assert callback.tracker is not None
    windows = load_run(callback.tracker.run_dir)
    assert list(windows["samples"]) == [3 * BATCH, 3 * BATCH, 2 * BATCH]
    assert list(windows["tokens"]) == [3 * BATCH * 8, 3 * BATCH * 8, 2 * BATCH * 8]
    quiet = WattprintCallback(project="off", count_work=False, **tracker_kwargs(tmp_path))
    model = train(tmp_path, quiet).model
    assert quiet.tracker is not None
    assert load_run(quiet.tracker.run_dir)["samples"].isna().all()
    assert model is not None and not model._forward_pre_hooks
