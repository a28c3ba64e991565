"""One small adapter per tool, so every benchmark drives wattprint and its peers the same way.

Each adapter opens the tool in its documented default configuration, with these exceptions so that
nothing reaches the network and every tool prices the same grid: the location is fixed to Germany
(wattprint ``location="DE"``; CodeCarbon ``OfflineEmissionsTracker(country_iso_code="DEU")``);
carbontracker has no offline switch and looks its location up by geo-IP (``geocoder.ip("me")``) when
it is constructed, so that one function is replaced by a fixed answer (DE); Zeus needs no location.
Peers are imported only inside these functions: the suite runs without any of them installed.
"""

from __future__ import annotations

import importlib.util
import itertools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol

from tracker.units import J_PER_KWH

TOOLS = ("wattprint", "carbontracker", "codecarbon", "zeus")
PEERS = TOOLS[1:]


class Session(Protocol):
    """A tool measuring this process: epochs in, GPU joules out."""

    def epoch_start(self) -> None:
        """Mark the start of an epoch."""

    def epoch_end(self) -> float | None:
        """Mark its end; the GPU energy the tool reports for it in J (None: no GPU figure)."""

    def close(self) -> None:
        """Stop the tool and its threads."""


@dataclass(frozen=True, slots=True)
class Options:
    """How to open a tool: its sampling interval (None: the tool's default) and where to log."""

    interval_s: float | None = None
    log_dir: str = ""
    sync_cuda: bool = False


@dataclass(frozen=True, slots=True)
class Tool:
    """A tool the suite can measure: its import name, distribution, and how to open it."""

    name: str
    module: str
    distribution: str
    opener: Callable[[Options], Session]
    sampler: str  # what runs in the background, for the notes

    def missing_reason(self) -> str | None:
        """Why the tool cannot be measured here, or None when it is installed."""
        if importlib.util.find_spec(self.module) is None:
            return "not installed (pip install -e '.[bench]')"
        return None

    def version(self) -> str:
        """The installed distribution's version, or ``-``."""
        import importlib.metadata  # not at import time: start-up is timed after this module loads

        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "-"

    def open(self, options: Options) -> Session:
        """Import the tool, construct it and start it (all of it counts as start-up)."""
        if not options.log_dir:
            options = Options(
                options.interval_s, tempfile.mkdtemp(prefix="bench-"), options.sync_cuda
            )
        return self.opener(options)


class _Wattprint:
    def __init__(self, options: Options) -> None:
        from tracker import Tracker

        if options.interval_s is None:
            self._tracker = Tracker("bench", options.log_dir, location="DE", verbose=0)
        else:
            self._tracker = Tracker(
                "bench", options.log_dir, location="DE", verbose=0, interval=options.interval_s
            )
        self._tracker.start()

    def epoch_start(self) -> None:
        self._tracker.epoch_start()

    def epoch_end(self) -> float | None:
        return self._tracker.epoch_end().gpu_energy_j

    def close(self) -> None:
        self._tracker.stop()


class _CarbonTracker:
    def __init__(self, options: Options) -> None:
        from carbontracker.emissions.intensity import intensity
        from carbontracker.tracker import CarbonTracker

        intensity.geocoder.ip = _fixed_location  # its only network call; no offline switch
        interval = {} if options.interval_s is None else {"update_interval": options.interval_s}
        self._ct: Any = CarbonTracker(
            epochs=1_000_000, epochs_before_pred=0, log_dir=None, verbose=0, **interval
        )

    def epoch_start(self) -> None:
        self._ct.epoch_start()

    def epoch_end(self) -> float | None:
        self._ct.epoch_end()
        thread = self._ct.tracker
        for component in thread.components:
            if component.name == "gpu":
                return float(component.energy_usage(thread.epoch_times)[-1]) * J_PER_KWH
        return None

    def close(self) -> None:
        self._ct.stop()


class _CodeCarbon:
    def __init__(self, options: Options) -> None:
        from codecarbon import OfflineEmissionsTracker

        interval = {} if options.interval_s is None else {"measure_power_secs": options.interval_s}
        self._cc: Any = OfflineEmissionsTracker(
            country_iso_code="DEU",
            output_dir=options.log_dir,
            save_to_file=False,
            log_level="error",
            allow_multiple_runs=True,
            **interval,
        )

    def epoch_start(self) -> None:
        self._cc.start_task()

    def epoch_end(self) -> float | None:
        data = self._cc.stop_task()
        gpu_kwh = getattr(data, "gpu_energy", None)
        return float(gpu_kwh) * J_PER_KWH if gpu_kwh is not None else None

    def close(self) -> None:
        self._cc.stop()


class _Zeus:
    def __init__(self, options: Options) -> None:
        from zeus.monitor import ZeusMonitor

        self._monitor: Any = ZeusMonitor()
        self._sync = options.sync_cuda  # Zeus synchronises through torch only where CUDA is
        self._keys = (f"epoch{i}" for i in itertools.count(1))
        self._key = ""

    def epoch_start(self) -> None:
        self._key = next(self._keys)
        self._monitor.begin_window(self._key, sync_execution=self._sync)

    def epoch_end(self) -> float | None:
        measurement = self._monitor.end_window(self._key, sync_execution=self._sync)
        energies = measurement.gpu_energy
        return float(sum(energies.values())) if energies else None

    def close(self) -> None:
        """Zeus has no background thread for GPUs with the energy counter."""


def _fixed_location(*args: object, **kwargs: object) -> SimpleNamespace:
    """What carbontracker's geo-IP lookup returns, offline: a fixed country (Germany)."""
    return SimpleNamespace(
        ok=True, country="DE", address="fixed location (offline benchmark)", lat=52.5, lng=13.4
    )


ALL: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool("wattprint", "tracker", "wattprint", _Wattprint, "sampler thread, interval 0.5 s"),
        Tool(
            "carbontracker",
            "carbontracker",
            "carbontracker",
            _CarbonTracker,
            "power polling thread, 1 s",
        ),
        Tool(
            "codecarbon",
            "codecarbon",
            "codecarbon",
            _CodeCarbon,
            "scheduler threads, 15 s and 1 s",
        ),
        Tool("zeus", "zeus", "zeus", _Zeus, "none for counter GPUs (reads at window edges)"),
    )
}
