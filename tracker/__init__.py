"""wattprint: per-epoch energy and carbon of ML training, from the hardware's own meters."""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from tracker.compat.carbontracker import CarbonTracker
from tracker.output.logs import load_run
from tracker.records import DeviceEnergy, EpochRecord, RunSummary
from tracker.tracker import Tracker, track

if TYPE_CHECKING:
    from tracker.estimation.forms import estimate

__all__ = [
    "CarbonTracker",
    "DeviceEnergy",
    "EpochRecord",
    "RunSummary",
    "Tracker",
    "__version__",
    "estimate",
    "load_run",
    "track",
]


def __getattr__(name: str) -> object:
    """``tracker.estimate``, imported on first use: ``import tracker`` loads no estimate tables."""
    if name == "estimate":
        from tracker.estimation.forms import estimate

        return estimate
    raise AttributeError(f"module 'tracker' has no attribute {name!r}")
