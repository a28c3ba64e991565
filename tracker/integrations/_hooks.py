"""What every framework callback does, with no framework in sight: start, epochs, stop.

The training loop is sacred here too: a hook that fails logs one warning per cause and returns,
so an exception from wattprint never reaches the framework's fit loop. Only bad ``Tracker``
arguments raise, when the callback is created, before any training starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from tracker.records import EpochRecord
from tracker.tracker import Tracker

logger = logging.getLogger(__name__)

T = TypeVar("T")


class TrackerHooks:
    """Drives one Tracker from a framework's callbacks; every method swallows its own failures.

    Give a ``tracker``, or ``Tracker`` keyword arguments: those are checked now and a Tracker is
    made from them at each ``start`` (so a callback that a launcher pickles holds no thread, and a
    second ``fit`` gets a run of its own).
    """

    def __init__(
        self, framework: str, tracker: Tracker | None, tracker_kwargs: dict[str, Any]
    ) -> None:
        if tracker is not None and tracker_kwargs:
            raise ValueError("pass either a Tracker or Tracker keyword arguments, not both")
        if tracker is None:
            Tracker(**tracker_kwargs)  # bad arguments fail here, before the fit starts
        self.framework = framework
        self.tracker = tracker
        self._kwargs = None if tracker is not None else tracker_kwargs
        self._running = False
        self._open = False
        self._failed: set[str] = set()

    def start(self) -> None:
        """Make (from keyword arguments) and start the Tracker, unless it runs already."""
        if self._running:
            return
        if self._kwargs is not None:
            kwargs = self._kwargs
            self.tracker = self._safely("start", lambda: Tracker(**kwargs))[1]
        if self.tracker is not None:
            self._running = self._safely("start", self.tracker.start)[0]

    def epoch_start(self) -> None:
        """Open an epoch (first closing one that a missed hook left open)."""
        if self._open:
            self.epoch_end()
        self.start()
        if self._running and self.tracker is not None:
            self._open = self._safely("epoch_start", self.tracker.epoch_start)[0]

    def epoch_end(self) -> EpochRecord | None:
        """Close the open epoch: its record, or None when none was open or closing it failed."""
        if not self._open or self.tracker is None:
            return None
        self._open = False
        return self._safely("epoch_end", self.tracker.epoch_end)[1]

    def stop(self, error: BaseException | None = None) -> None:
        """Stop the Tracker (an open epoch is closed as partial); a second call does nothing.

        ``error``: the exception that ended the fit, recorded as the run's status.
        """
        tracker = self.tracker
        if not self._running or tracker is None:
            return
        self._running = self._open = False
        if error is None:
            self._safely("stop", tracker.stop)
        else:
            self._safely("stop", lambda: tracker.__exit__(type(error), error, error.__traceback__))

    def safely(self, what: str, action: Callable[[], object]) -> None:
        """Run a framework-side step (handing the figures to its logger, say) protected alike."""
        self._safely(what, action)

    def _safely(self, what: str, action: Callable[[], T]) -> tuple[bool, T | None]:
        try:
            return True, action()
        except Exception as error:  # the fit loop goes on; the cause is reported once
            if what not in self._failed:
                self._failed.add(what)
                logger.warning(
                    "wattprint %s callback: %s failed (%r); training goes on",
                    self.framework,
                    what,
                    error,
                )
            return False, None


def epoch_metrics(record: EpochRecord, prefix: str = "wattprint/") -> dict[str, float]:
    """An epoch's figures as flat metrics for a framework's logger (unmeasured ones left out)."""
    values: dict[str, float | None] = {
        "facility_energy_kwh": record.facility_energy_kwh,
        "co2_g": record.co2_g,
        "it_energy_j": record.it_energy_j,
        "gpu_energy_j": record.gpu_energy_j,
        "cpu_energy_j": record.cpu_energy_j,
        "dram_energy_j": record.dram_energy_j,
        "other_energy_j": record.other_energy_j,  # only where a whole-node meter exists
        "duration_s": record.duration_s,
    }
    return {f"{prefix}{name}": float(v) for name, v in values.items() if v is not None}
