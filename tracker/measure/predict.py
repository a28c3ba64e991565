"""Predict a whole run's duration, energy and gCO2e from its first epochs, and check it at the end.

The prediction is the mean of the completed epochs times the run's epochs, as carbontracker
predicts (``carbontracker/predictor.py``: ``total_epochs x mean``). Its range is the run as it
stands plus the remaining epochs all as cheap as the cheapest epoch seen so far (low) or all as
costly as the costliest (high). That range assumes nothing about how epochs are distributed: a
t-interval would need two or more epochs, and assumes independent, normally spread epochs, while
real epochs drift in one direction (warm-up, caches, learning-rate schedules), which is exactly
when a min/max bound stays honest. After one epoch there is no spread, so low = high = value.

Energy keys keep their house meaning: ``it_energy_j`` is IT energy (before PUE),
``facility_energy_kwh`` is facility energy (after PUE), as in ``EpochRecord``; an epoch with
nothing measured counts as unknown (NaN), never as 0. Emissions extrapolate the intensity the
epochs so far were priced at. Partial epochs (closed by an exception) are left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tracker.arguments import integer
from tracker.records import EpochRecord, Prediction, PredictionCheck
from tracker.units import figure

if TYPE_CHECKING:
    from tracker.measure.epochs import Totals


def predict(records: Sequence[EpochRecord], epochs: int) -> Prediction:
    """The completed (non-partial) ``records`` extrapolated to a run of ``epochs`` epochs.

    Raises ``ValueError`` when there is no completed epoch or ``epochs`` is not an int >= 1.
    """
    total = integer("epochs", epochs, minimum=1)
    done = [r for r in records if not r.partial]
    if not done:
        raise ValueError("predict needs at least one completed epoch")
    remaining = max(total - len(done), 0)

    def extrapolate(values: list[float]) -> tuple[float, float, float]:
        known = [v for v in values if math.isfinite(v)]  # NaN: an epoch's intensity was lost
        if not known:
            return (math.nan, math.nan, math.nan)
        mean = sum(known) / len(known)
        spent = mean * len(values)  # the sum itself when every epoch is known
        value = mean * total
        low, high = spent + remaining * min(known), spent + remaining * max(known)
        return (value, min(low, value), max(high, value))

    duration = extrapolate([r.duration_s for r in done])
    energy = extrapolate([_known(r.it_energy_j) for r in done])
    facility = extrapolate([_known(r.facility_energy_kwh) for r in done])
    co2 = extrapolate([_known(r.co2_g) for r in done])
    return Prediction(
        epochs=total,
        based_on_epochs=len(done),
        duration_s=duration[0],
        duration_low_s=duration[1],
        duration_high_s=duration[2],
        it_energy_j=energy[0],
        it_energy_low_j=energy[1],
        it_energy_high_j=energy[2],
        facility_energy_kwh=facility[0],
        facility_energy_low_kwh=facility[1],
        facility_energy_high_kwh=facility[2],
        co2_g=co2[0],
        co2_low_g=co2[1],
        co2_high_g=co2[2],
    )


def check(prediction: Prediction, records: Sequence[EpochRecord]) -> PredictionCheck | None:
    """The completed ``records`` against ``prediction``; None when no epoch completed."""
    done = [r for r in records if not r.partial]
    return compare(
        prediction,
        len(done),
        (
            sum(r.duration_s for r in done),
            sum(_known(r.it_energy_j) for r in done),
            sum(_known(r.co2_g) for r in done),
        ),
    )


def compare(
    prediction: Prediction, run: int, actual: tuple[float, float, float]
) -> PredictionCheck | None:
    """``run`` completed epochs against ``prediction``; None when no epoch completed.

    ``actual`` is their (duration in s, IT energy in J, gCO2e).
    """
    if run == 0:
        return None
    predicted = (prediction.duration_s, prediction.it_energy_j, prediction.co2_g)
    scale = prediction.epochs / run  # per-epoch comparison when the counts differ
    errors = [
        a * scale / p - 1.0 if p > 0 and math.isfinite(a) else None
        for a, p in zip(actual, predicted, strict=True)
    ]
    in_range = None
    if run == prediction.epochs and prediction.based_on_epochs >= 2:  # one epoch has no spread
        in_range = (
            prediction.it_energy_low_j * (1 - 1e-9)
            <= actual[1]
            <= prediction.it_energy_high_j * (1 + 1e-9)
        )
    return PredictionCheck(
        epochs_predicted=prediction.epochs,
        epochs_run=run,
        duration_s=actual[0],
        it_energy_j=actual[1],
        co2_g=actual[2],
        duration_error=errors[0],
        energy_error=errors[1],
        co2_error=errors[2],
        energy_in_range=in_range,
    )


class Predictor:
    """Makes a run's prediction once, after ``epochs_before_pred`` completed epochs.

    ``epochs`` (int >= 1, or None for no prediction) is the run's total; ``epochs_before_pred``
    (int >= 0, at most ``epochs``) is how many completed epochs to wait for; 0 turns prediction
    off, as in carbontracker. Bad values raise ``ValueError`` naming the argument.
    """

    def __init__(self, epochs: int | None, epochs_before_pred: int = 1) -> None:
        self.epochs = None if epochs is None else integer("epochs", epochs, minimum=1)
        self.epochs_before_pred = integer("epochs_before_pred", epochs_before_pred, minimum=0)
        if self.epochs is not None and self.epochs_before_pred > self.epochs:
            raise ValueError(
                f"epochs_before_pred must be at most epochs ({self.epochs}), "
                f"got {epochs_before_pred}"
            )
        self.prediction: Prediction | None = None

    def observe(self, records: Sequence[EpochRecord]) -> Prediction | None:
        """Called after each epoch: the prediction when it is made by this call, else None."""
        if self.prediction is not None or self.epochs is None or self.epochs_before_pred == 0:
            return None
        if sum(1 for r in records if not r.partial) < self.epochs_before_pred:
            return None
        self.prediction = predict(records, self.epochs)
        return self.prediction

    def check(self, totals: Totals) -> PredictionCheck | None:
        """The run's completed epochs so far (its running ``totals``) against the prediction."""
        if self.prediction is None:
            return None
        done = (totals.done_duration_s, totals.done_it_energy_j, totals.done_co2_g)
        return compare(self.prediction, totals.done_epochs, done)


def prediction_line(prediction: Prediction) -> str:
    """``wattprint prediction for 10 epochs (from 2): 0:20:00 (0:19:40-0:20:30), 0.03 kWh ...``."""
    spread = prediction.based_on_epochs >= 2
    return (
        f"wattprint prediction for {prediction.epochs} epochs "
        f"(from {prediction.based_on_epochs}): "
        f"{duration_text(prediction.duration_s)}"
        + (
            f" ({duration_text(prediction.duration_low_s)}-"
            f"{duration_text(prediction.duration_high_s)})"
        )
        * spread
        + f", {figure(prediction.facility_energy_kwh)} kWh"
        + (
            f" ({figure(prediction.facility_energy_low_kwh)}-"
            f"{figure(prediction.facility_energy_high_kwh)})"
        )
        * spread
        + f", {figure(prediction.co2_g)} gCO2e"
        + (f" ({figure(prediction.co2_low_g)}-{figure(prediction.co2_high_g)})" * spread)
        + ("" if spread else "; a range needs 2 or more epochs")
    )


def check_line(comparison: PredictionCheck) -> str:
    """``actual vs predicted: time +2.1%, energy -0.4% (within range), gCO2e -0.4%``."""
    parts = []
    for name, error in (
        ("time", comparison.duration_error),
        ("energy", comparison.energy_error),
        ("gCO2e", comparison.co2_error),
    ):
        text = f"{name} {error:+.1%}" if error is not None else f"{name} n/a"
        if name == "energy" and comparison.energy_in_range is not None:
            text += " (within range)" if comparison.energy_in_range else " (outside range)"
        parts.append(text)
    per_epoch = "" if comparison.epochs_run == comparison.epochs_predicted else " per epoch"
    return (
        f"actual vs predicted{per_epoch} ({comparison.epochs_run} of "
        f"{comparison.epochs_predicted} epochs): " + ", ".join(parts)
    )


def clock(seconds: float) -> str:
    """``h:mm:ss`` (hours past 24 kept as hours), as carbontracker prints times."""
    if not math.isfinite(seconds):
        return "?"
    whole = round(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def duration_text(seconds: float) -> str:
    """``12.3 s`` under a minute, else ``h:mm:ss``."""
    return f"{seconds:.1f} s" if math.isfinite(seconds) and seconds < 60 else clock(seconds)


def _known(value: float | None) -> float:
    """A figure as a float, NaN where it was not measured."""
    return math.nan if value is None else value
