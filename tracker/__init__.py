"""wattprint: per-epoch energy and carbon of ML training, from the hardware's own meters."""

__version__ = "0.1.0"

from tracker.compat import CarbonTracker
from tracker.logs import load_run
from tracker.records import DeviceEnergy, EpochRecord, RunSummary
from tracker.tracker import Tracker, track

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
