"""Runs with known energies and work: a counter the test sets, recorded by a real ``Tracker``.

``LedgerMeter`` is the hardware boundary: a fast energy counter that reads exactly what the test
put on it, so an epoch's energy is the joules the test added during it. ``recorded_run`` drives a
real Tracker through epochs of given energy and work and returns the run directory it wrote.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from backends.base import Meter, MeterInfo, Reading
from tracker import Tracker

Epoch = tuple[float, "int | None", "int | None"]
"""One epoch of a recorded run: (IT energy in J, samples, tokens)."""


class LedgerMeter(Meter):
    """A GPU energy counter at ``energy_j``, which the test raises as the "training" spends."""

    def __init__(self, model: str = "simulated board") -> None:
        self.info = MeterInfo("gpu0", "gpu", model, "counter", host_level=False)
        self.energy_j = 0.0

    def read(self) -> Reading:
        return Reading(t_s=time.monotonic(), energy_j=self.energy_j)


def tracker_on(meter: LedgerMeter, log_dir: Path, project: str, **kwargs: object) -> Tracker:
    """A quiet Tracker of ``meter`` alone at 400 gCO2e/kWh, its sampler idle between edges."""
    settings: dict[str, object] = {
        "run_id": "r",
        "components": ["gpu"],
        "intensity": 400.0,
        "interval": 60.0,
        "sample_period": 60.0,
        "verbose": 0,
    }
    return Tracker(project, log_dir, meters=[meter], **(settings | kwargs))  # type: ignore[arg-type]


def recorded_run(
    log_dir: Path,
    project: str,
    epochs: Sequence[Epoch],
    model: str = "simulated board",
    **kwargs: object,
) -> Path:
    """Record a run of ``epochs`` (J, samples, tokens) with a real Tracker; its run directory."""
    meter = LedgerMeter(model)
    tracker = tracker_on(meter, log_dir, project, **kwargs)
    with tracker:
        for energy_j, samples, tokens in epochs:
            tracker.epoch_start()
            meter.energy_j += energy_j
            tracker.epoch_end(samples=samples, tokens=tokens)
    return tracker.run_dir
