"""wattprint: per-epoch energy and carbon of ML training, from the hardware's own meters.

The public API. ``Tracker``, ``track``, ``load_run`` and the records load with the package;
``CarbonTracker`` (the carbontracker drop-in) and ``estimate`` (estimates before a run) load on
first use, so ``import tracker`` stays light. ``%load_ext tracker`` gives IPython the
``%%wattprint`` magic (``tracker.notebook``, which imports IPython only then).
"""

from typing import TYPE_CHECKING, Any

from tracker.decorator import track
from tracker.output.logs import load_run
from tracker.records import DeviceEnergy, EpochRecord, RunSummary
from tracker.tracker import Tracker
from tracker.version import VERSION as __version__

if TYPE_CHECKING:
    from tracker.compat.carbontracker import CarbonTracker
    from tracker.estimation.forms import estimate

__all__ = [
    "CarbonTracker",
    "DeviceEnergy",
    "EpochRecord",
    "RunSummary",
    "Tracker",
    "__version__",
    "estimate",
    "load_ipython_extension",
    "load_run",
    "track",
]


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext tracker``: register the ``%%wattprint`` and ``%wattprint`` magics."""
    from tracker.notebook import load_ipython_extension

    load_ipython_extension(ipython)


def __getattr__(name: str) -> object:
    """``tracker.CarbonTracker`` and ``tracker.estimate``, imported on first use."""
    if name == "CarbonTracker":
        from tracker.compat.carbontracker import CarbonTracker

        return CarbonTracker
    if name == "estimate":
        from tracker.estimation.forms import estimate

        return estimate
    raise AttributeError(f"module 'tracker' has no attribute {name!r}")
