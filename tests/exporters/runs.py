"""Runs of simulated boards (power x time is the truth), exported to the real libraries."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from tests.faults.simulated import ConstantPowerMeter
from tracker import Tracker
from tracker.exporters import Exporter

POWER_W = {"gpu0": 200.0, "gpu1": 150.0, "cpu0": 60.0}
EPOCH_S = 0.3


def boards() -> list[ConstantPowerMeter]:
    """Two GPUs and a CPU drawing ``POWER_W``."""
    return [
        ConstantPowerMeter(device, watts, "cpu" if device.startswith("cpu") else "gpu")
        for device, watts in POWER_W.items()
    ]


def make_tracker(tmp_path: Path, exporters: Sequence[Exporter], **kwargs: object) -> Tracker:
    """A quiet Tracker of the boards at 400 g/kWh, PUE 1.2, sampling fast, feeding ``exporters``."""
    options: dict[str, object] = {
        "meters": boards(),
        "intensity": 400.0,
        "pue": 1.2,
        "verbose": 0,
        "interval": 0.05,
        "sample_period": 0.1,
        "exporters": exporters,
    }
    return Tracker("exported", tmp_path / "runs", **(options | kwargs))  # type: ignore[arg-type]


def run_epochs(tracker: Tracker, epochs: int = 3) -> None:
    """Close ``epochs`` epochs of ``EPOCH_S`` each (starting the tracker if needed)."""
    for _ in range(epochs):
        with tracker.epoch():
            time.sleep(EPOCH_S)
