"""Keras 3: ``WattprintCallback`` measures each epoch of ``model.fit`` with a ``Tracker``.

    from tracker.integrations.keras import WattprintCallback
    model.fit(x, y, epochs=10, callbacks=[WattprintCallback(project="mlp", location="FR")])

A tracker epoch runs from ``on_epoch_begin`` to ``on_epoch_end``; the epoch's figures are added
to the epoch's ``logs`` (keys ``wattprint/facility_energy_kwh``, ``wattprint/co2_g``, ...), so
they appear in the ``History`` that ``fit`` returns and in the callbacks after this one (CSVLogger,
TensorBoard). The Tracker stops at ``on_train_end``. Keras runs on whichever backend
``KERAS_BACKEND`` names; when it is unset, TensorFlow is not installed and PyTorch is, this module
sets it to ``torch`` before importing Keras.

Work: Keras tells callbacks the step, not the batch, so with ``batch_size=`` (the one given to
``fit``) each epoch counts steps x ``batch_size`` samples: exact when the batch size divides the
data, else up to ``batch_size - 1`` too many for the last, shorter batch. Without it nothing is
counted; exact counts can be added with ``callback.tracker.add_work(samples=...)``.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from typing import Any

if (
    "keras" not in sys.modules
    and "KERAS_BACKEND" not in os.environ
    and importlib.util.find_spec("tensorflow") is None
    and importlib.util.find_spec("torch") is not None
):
    os.environ["KERAS_BACKEND"] = "torch"

try:
    import keras
except ImportError as error:  # pragma: no cover - the framework is an optional extra
    raise ImportError(
        "tracker.integrations.keras needs Keras 3: pip install 'wattprint[keras]'"
    ) from error

from tracker.arguments import integer
from tracker.exporters.base import epoch_metrics
from tracker.integrations._hooks import TrackerHooks
from tracker.tracker import Tracker


class WattprintCallback(keras.callbacks.Callback):  # type: ignore[misc]  # Keras has no types
    """Measures every epoch of ``fit``; give a ``Tracker`` or ``Tracker`` keyword arguments.

    ``batch_size``: ``fit``'s, to count steps x ``batch_size`` samples an epoch.
    """

    def __init__(
        self,
        tracker: Tracker | None = None,
        *,
        batch_size: int | None = None,
        **tracker_kwargs: Any,
    ) -> None:
        super().__init__()
        self.batch_size = None if batch_size is None else integer("batch_size", batch_size, 1)
        self.hooks = TrackerHooks("keras", tracker, tracker_kwargs)
        self._steps = 0  # steps of the open epoch

    @property
    def tracker(self) -> Tracker | None:
        """The Tracker of the current (or last) fit."""
        return self.hooks.tracker

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Start the Tracker for this fit."""
        self.hooks.start()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Open an epoch."""
        self.hooks.epoch_start()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Note the steps done (``batch``: the index of the epoch's last step run)."""
        self._steps = batch + 1

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Close the epoch (steps x ``batch_size`` samples) and add its figures to ``logs``."""
        if self.batch_size is not None:
            self.hooks.add_work(samples=self._steps * self.batch_size)
        self._steps = 0
        record = self.hooks.epoch_end()
        if record is not None and logs is not None:
            metrics = epoch_metrics(record)
            self.hooks.safely("logging the epoch", lambda: logs.update(metrics))

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        """Stop the Tracker."""
        self.hooks.stop()
