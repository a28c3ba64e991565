"""Hugging Face transformers: ``WattprintCallback`` measures a ``Trainer``'s epochs with a Tracker.

    from tracker.integrations.transformers import WattprintCallback
    callback = WattprintCallback(project="bert", location="US-CA")
    trainer = Trainer(model, args, train_dataset=data, callbacks=[callback])

A tracker epoch runs from ``on_epoch_begin`` to ``on_epoch_end``; with ``every_n_steps=N`` it is
instead every N optimizer steps (the last window may be shorter), for runs whose epochs are long
or that count steps rather than epochs. Each record's figures are appended to
``trainer.state.log_history`` (keys ``wattprint/facility_energy_kwh``, ``wattprint/co2_g``,
...), which the Trainer saves with its checkpoints; the Tracker stops at ``on_train_end``.

Work: the callbacks of a ``Trainer`` never see a batch, so the callback watches the model's inputs
(a forward pre-hook, counting only while the model is in training mode, so evaluation is left
out). Samples are the batch dimension of the model's main input (``input_ids``). Tokens are the
growth of ``state.num_input_tokens_seen`` when the user turned on
``include_num_input_tokens_seen`` (the Trainer's own count, all or non-padding tokens as asked)
and the run is one process; otherwise the ones of the inputs' ``attention_mask`` (every input id
where there is none), summed on the device and read once per epoch, so counting costs no
synchronisation per step. In a distributed run each process counts its own batches.
``count_work=False`` counts nothing.
"""

from __future__ import annotations

from collections.abc import Callable
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
        count_work: bool = True,
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
        self.count_work = count_work
        self._counter: _BatchCounter | None = None
        self._trainer_tokens: int | None = None  # num_input_tokens_seen as the window opened

    @property
    def tracker(self) -> Tracker | None:
        """The Tracker of the current (or last) training."""
        return self.hooks.tracker

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Start the Tracker and the counting (and, with ``every_n_steps``, the first window)."""
        self.hooks.start()
        self._stop_counting()  # a training that failed before on_train_end left its counter
        model = kwargs.get("model")
        if self.count_work and model is not None:
            count_tokens = not _counts_tokens(args)
            self._counter = self.hooks.safely(
                "counting work", lambda: _BatchCounter(model, count_tokens, self.hooks.safely)
            )
        if self.every_n_steps is not None:
            self._open(args, state)

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Open an epoch, unless windows of steps are measured instead."""
        if self.every_n_steps is None:
            self._open(args, state)

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Close the epoch and append its figures to ``state.log_history``."""
        if self.every_n_steps is None:
            self._close(state)

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Close the window every ``every_n_steps`` steps and open the next."""
        if self.every_n_steps is not None and state.global_step % self.every_n_steps == 0:
            self._close(state)
            self._open(args, state)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        """Close the last epoch or window and stop the Tracker and the counting."""
        self._close(state)  # the last, shorter window of steps
        self.hooks.stop()
        self._stop_counting()

    def _open(self, args: TrainingArguments, state: TrainerState) -> None:
        self.hooks.epoch_start()
        seen = int(getattr(state, "num_input_tokens_seen", 0) or 0)
        self._trainer_tokens = seen if self.count_work and _counts_tokens(args) else None
        if self._counter is not None:
            self._counter.take()  # what the model saw outside the window is not the window's

    def _stop_counting(self) -> None:
        if self._counter is not None:
            self.hooks.safely("counting work", self._counter.remove)
            self._counter = None

    def _close(self, state: TrainerState) -> None:
        if self._counter is not None:
            counter = self._counter
            samples, tokens = counter.take()
            if self._trainer_tokens is not None:
                tokens = int(state.num_input_tokens_seen) - self._trainer_tokens
            self.hooks.add_work(samples=samples, tokens=tokens)
        self._record(state, self.hooks.epoch_end())

    def _record(self, state: TrainerState, record: EpochRecord | None) -> None:
        if record is not None:
            entry = {"epoch": state.epoch, "step": state.global_step, **epoch_metrics(record)}
            self.hooks.safely("logging the epoch", lambda: state.log_history.append(entry))


def _counts_tokens(args: TrainingArguments) -> bool:
    """Whether the Trainer counts this process's input tokens itself (``num_input_tokens_seen``).

    It gathers the count over processes, so only a one-process run's is this process's own.
    """
    setting = getattr(args, "include_num_input_tokens_seen", False)
    return setting not in (False, None, "no") and getattr(args, "world_size", 1) == 1


class _BatchCounter:
    """The samples (and tokens) of the batches a model trains on, from a forward pre-hook.

    Tokens are summed as a tensor on the model's device and read in ``take``, so a step costs no
    synchronisation. ``safely`` runs the counting so that nothing from it reaches the forward.
    """

    def __init__(
        self, model: Any, count_tokens: bool, safely: Callable[[str, Callable[[], None]], object]
    ) -> None:
        self._main_input = str(getattr(model, "main_input_name", "input_ids"))
        self._count_tokens = count_tokens
        self._safely = safely
        self._samples: int | None = None
        self._tokens: Any = None  # an int or a 0-d tensor
        self._handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def take(self) -> tuple[int | None, int | None]:
        """The samples and tokens counted since the last ``take``."""
        samples, tokens = self._samples, self._tokens
        self._samples = self._tokens = None
        return samples, None if tokens is None else int(tokens)

    def remove(self) -> None:
        """Stop counting."""
        self._handle.remove()

    def _hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if module.training:
            self._safely("counting work", lambda: self._count(args, kwargs))

    def _count(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        inputs = kwargs.get(self._main_input, args[0] if args else None)
        if inputs is None:
            return
        self._samples = (self._samples or 0) + int(inputs.shape[0])
        if self._count_tokens:
            mask = kwargs.get("attention_mask")
            tokens = mask.sum() if mask is not None else inputs.numel()
            self._tokens = tokens if self._tokens is None else self._tokens + tokens
