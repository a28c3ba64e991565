"""PyTorch Lightning: ``WattprintCallback`` measures each training epoch with a ``Tracker``.

    from tracker.integrations.lightning import WattprintCallback
    trainer = Trainer(max_epochs=10, callbacks=[WattprintCallback(project="resnet", location="DE")])

An epoch runs from ``on_train_epoch_start`` to ``on_train_epoch_end`` (the validation Lightning runs
at the end of an epoch included). Each epoch's figures (``wattprint/facility_energy_kwh``,
``wattprint/co2_g``, ``wattprint/it_energy_j`` and the components measured) also go to the trainer's
loggers at the trainer's global step; the Tracker stops when the fit ends or fails. Works with
``lightning`` (``lightning.pytorch``) or the older ``pytorch_lightning`` package.

Work: every training batch's size, as Lightning infers it for ``self.log`` (the length of the first
tensor in the batch, ``extract_batch_size``), is counted as samples, so each epoch has its IT
energy per sample; each micro-batch of gradient accumulation counts once, and in a distributed fit
each rank counts its own batches. Tokens are the model's to count:
``callback.tracker.add_work(tokens=n)`` in ``training_step``. ``count_work=False`` counts nothing.
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch import Callback, LightningModule, Trainer
    from lightning.pytorch.utilities.data import extract_batch_size
except ImportError:  # pragma: no cover - the standalone package
    try:
        from pytorch_lightning import (  # type: ignore[assignment]
            Callback,
            LightningModule,
            Trainer,
        )
        from pytorch_lightning.utilities.data import extract_batch_size
    except ImportError as error:
        raise ImportError(
            "tracker.integrations.lightning needs PyTorch Lightning: "
            "pip install 'wattprint[lightning]'"
        ) from error

from tracker.exporters.base import epoch_metrics
from tracker.integrations._hooks import TrackerHooks
from tracker.tracker import Tracker


class WattprintCallback(Callback):
    """Measures every training epoch; give a ``Tracker`` or ``Tracker`` keyword arguments.

    ``count_work=False`` leaves the samples uncounted (count them yourself with ``add_work``);
    ``log_metrics=False`` keeps the figures out of the trainer's loggers (they are in the run's
    files either way). In a distributed fit every rank measures its own devices and rank 0's run
    directory holds the job's totals (``tracker.distributed.process_group``); the loggers, which
    Lightning runs on rank 0 only, get rank 0's own figures.
    """

    def __init__(
        self,
        tracker: Tracker | None = None,
        *,
        log_metrics: bool = True,
        count_work: bool = True,
        **tracker_kwargs: Any,
    ) -> None:
        super().__init__()
        self.hooks = TrackerHooks("lightning", tracker, tracker_kwargs)
        self.log_metrics = log_metrics
        self.count_work = count_work

    @property
    def tracker(self) -> Tracker | None:
        """The Tracker of the current (or last) fit."""
        return self.hooks.tracker

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Start the Tracker for this fit."""
        self.hooks.start()

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Open an epoch."""
        self.hooks.epoch_start()

    def on_train_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        """Count the batch's samples (with ``count_work``)."""
        if self.count_work:
            self.hooks.safely(
                "counting samples", lambda: self.hooks.add_work(samples=extract_batch_size(batch))
            )

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Close the epoch and, with ``log_metrics``, hand its figures to the trainer's loggers."""
        record = self.hooks.epoch_end()
        if record is None or not self.log_metrics:
            return
        metrics = epoch_metrics(record)

        def log() -> None:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=trainer.global_step)

        self.hooks.safely("logging the epoch", log)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Stop the Tracker."""
        self.hooks.stop()

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        """Stop the Tracker, recording the exception that ended the fit."""
        self.hooks.stop(exception)
