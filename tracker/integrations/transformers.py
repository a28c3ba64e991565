"""Hugging Face transformers: ``WattprintCallback`` measures a ``Trainer``'s epochs with a Tracker.

    from tracker.integrations.transformers import WattprintCallback
    callback = WattprintCallback(project="bert", location="US-CA")
    trainer = Trainer(model, args, train_dataset=data, callbacks=[callback])

A tracker epoch runs from ``on_epoch_begin`` to ``on_epoch_end``; with ``every_n_steps=N`` it is
instead every N optimizer steps (the last window may be shorter), for runs whose epochs are long
or that count steps rather than epochs. Each record's figures are appended to
``trainer.state.log_history`` (keys ``wattprint/facility_energy_kwh``, ``wattprint/co2_g``,
...), which the Trainer saves with its checkpoints; the Tracker stops at ``on_train_end``.
"""

from __future__ import annotations

from typing import Any

try:
    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
except ImportError as error:  # pragma: no cover - the framework is an optional extra
    raise ImportError(
        "tracker.integrations.transformers needs transformers: "
        "pip install 'wattprint[transformers]'"
    ) from error

from tracker.exporters.base import epoch_metrics
from tracker.integrations._hooks import TrackerHooks
from tracker.records import EpochRecord
from tracker.tracker import Tracker


class WattprintCallback(TrainerCallback):
    """Measures every epoch (or every ``every_n_steps`` steps); a ``Tracker`` or its arguments.

    In a distributed run every process measures its own devices and rank 0's run directory holds
    the job's totals (see ``tracker.distributed.process_group``).
    """

    def __init__(
        self,
        tracker: Tracker | None = None,
        *,
        every_n_steps: int | None = None,
        **tracker_kwargs: Any,
    ) -> None:
        if every_n_steps is not None and (
            isinstance(every_n_steps, bool)
            or not isinstance(every_n_steps, int)
            or every_n_steps < 1
        ):
            raise ValueError(f"every_n_steps must be a positive integer, got {every_n_steps!r}")
        self.hooks = TrackerHooks("transformers", tracker, tracker_kwargs)
        self.every_n_steps = every_n_steps

    @property
    def tracker(self) -> Tracker | None:
        """The Tracker of the current (or last) training."""
        return self.hooks.tracker

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Start the Tracker (and, with ``every_n_steps``, the first window)."""
        self.hooks.start()
        if self.every_n_steps is not None:
            self.hooks.epoch_start()

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Open an epoch, unless windows of steps are measured instead."""
        if self.every_n_steps is None:
            self.hooks.epoch_start()

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Close the epoch and append its figures to ``state.log_history``."""
        if self.every_n_steps is None:
            self._record(state, self.hooks.epoch_end())

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Close the window every ``every_n_steps`` steps and open the next."""
        if self.every_n_steps is not None and state.global_step % self.every_n_steps == 0:
            self._record(state, self.hooks.epoch_end())
            self.hooks.epoch_start()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Close the last epoch or window and stop the Tracker."""
        self._record(state, self.hooks.epoch_end())  # the last, shorter window of steps
        self.hooks.stop()

    def _record(self, state: TrainerState, record: EpochRecord | None) -> None:
        if record is not None:
            entry = {"epoch": state.epoch, "step": state.global_step, **epoch_metrics(record)}
            self.hooks.safely("logging the epoch", lambda: state.log_history.append(entry))
