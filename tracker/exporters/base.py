"""The exporter protocol: what a run tells a metrics sink, and how the tracker calls every sink.

A ``Tracker`` given ``exporters=[...]`` calls each one's ``start`` once its meters are known,
``interval`` with each device's latest power (the ``samples.csv`` figure, on the sampler thread),
``epoch`` with every closed epoch's record and ``stop`` with the run's summary once its files are
final. Every call runs through ``Notices.shielded``: an exporter that raises is warned about once
and never reaches the training loop. One whose ``start`` fails is left out of the rest of the run
(it has nowhere to send figures); one that fails later is kept, so a sink that was briefly
unreachable gets the next epochs and the final figures.
"""

from __future__ import annotations

import abc
import importlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from backends.base import MeterInfo
from tracker.measure.sampler import TimelinePoint
from tracker.notices import Notices
from tracker.records import EpochRecord, RunSummary

_BUSY: set[int] = set()  # ids of the exporters some run has started and not yet stopped
_BUSY_LOCK = threading.Lock()

LABELS = ("project", "run_id", "host", "rank", "device", "component", "method")
"""The labels (attributes) of every per-device figure an exporter publishes."""


@dataclass(frozen=True, slots=True)
class RunInfo:
    """What an exporter learns at ``start``: the run, where it is written, what it measures.

    ``location`` is the location's code (None without one); ``intensity_source`` the intensity's
    provenance as ``RunSummary.intensity_source`` gives it; ``pue`` the ratio applied to IT
    energy; ``devices`` the meters measured.
    """

    project: str
    run_id: str
    run_dir: Path
    host: str
    rank: int
    location: str | None
    intensity_source: str
    pue: float
    devices: tuple[MeterInfo, ...]

    def run_labels(self) -> dict[str, str]:
        """The run's own labels (``LABELS`` without the device's), for run-wide figures."""
        return {
            "project": self.project,
            "run_id": self.run_id,
            "host": self.host,
            "rank": str(self.rank),
        }

    def labels(self, device: MeterInfo) -> dict[str, str]:
        """One device's ``LABELS`` and their values."""
        kind = {"device": device.device, "component": device.component, "method": device.method}
        return self.run_labels() | kind


class Exporter(abc.ABC):
    """A metrics sink a ``Tracker`` feeds; subclass it to write one of your own.

    Methods may raise: the tracker warns once and carries on. ``interval`` runs on the sampler
    thread and must return at once (update memory; no file or network I/O). An instance may be
    started again for a new run once stopped (a framework callback's second ``fit``).
    """

    @abc.abstractmethod
    def start(self, run: RunInfo) -> None:
        """Open the sink for ``run`` (start a server, open a file, join an experiment)."""

    def interval(self, power_w: Mapping[str, float]) -> None:  # noqa: B027 - optional hook
        """Each device's average power over its latest timeline interval, in W, by device name."""

    @abc.abstractmethod
    def epoch(self, record: EpochRecord) -> None:
        """Publish one closed epoch's figures."""

    @abc.abstractmethod
    def stop(self, summary: RunSummary) -> None:
        """Publish the run's totals and close the sink (the run's files are final now)."""


class ExporterGroup:
    """A run's exporters, checked when the Tracker is made and each called in isolation."""

    def __init__(self, exporters: object, notices: Notices) -> None:
        if (
            isinstance(exporters, str | bytes)
            or not isinstance(exporters, Sequence)
            or not all(isinstance(e, Exporter) for e in exporters)
        ):
            raise ValueError(
                "exporters must be a sequence of tracker.exporters instances (Prometheus(), "
                f"OpenTelemetry(), MLflow(), WandB(), TensorBoard(log_dir), ...), got {exporters!r}"
            )
        if len({id(e) for e in exporters}) != len(exporters):
            raise ValueError(f"exporters must each be given once, got {exporters!r}")
        self._all: tuple[Exporter, ...] = tuple(exporters)
        self._notices = notices
        self._live: tuple[Exporter, ...] = ()  # started and not yet stopped
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        """Whether the run has any exporter."""
        return bool(self._all)

    def start(self, run: RunInfo) -> None:
        """Start every exporter; one whose start fails, or that another run holds, is left out."""
        out = "it is left out of this run"
        started = [e for e in self._all if self._call(e, "start", partial(_claim, e, run), out)]
        with self._lock:
            self._live = tuple(started)

    def interval(self, points: Sequence[TimelinePoint]) -> None:
        """Hand the latest power of each device in ``points`` to the started exporters."""
        power_w = {device: watts for _t, device, watts in points}
        for exporter in self._live:
            self._call(exporter, "interval", partial(exporter.interval, power_w))

    def epoch(self, record: EpochRecord) -> None:
        """Hand a closed epoch to the started exporters."""
        for exporter in self._live:
            self._call(exporter, "epoch", partial(exporter.epoch, record))

    def stop(self, summary: RunSummary) -> None:
        """Stop the started exporters (once: a second call does nothing)."""
        with self._lock:
            live, self._live = self._live, ()
        for exporter in live:
            self._call(exporter, "stop", partial(exporter.stop, summary))
            with _BUSY_LOCK:
                _BUSY.discard(id(exporter))

    def _call(
        self, exporter: Exporter, method: str, action: Callable[[], object], consequence: str = ""
    ) -> bool:
        name = type(exporter).__name__
        key = f"exporter:{self._all.index(exporter)}:{name}"  # one warning per exporter
        what = f"exporter {name} ({method})"
        return self._notices.shielded(key, what, partial(_contained, action), consequence)


FIGURES = (
    "facility_energy_kwh",
    "co2_g",
    "it_energy_j",
    "gpu_energy_j",
    "cpu_energy_j",
    "dram_energy_j",
    "other_energy_j",
    "duration_s",
    "samples",
    "tokens",
    "it_energy_j_per_sample",
    "it_energy_j_per_token",
)
"""The figures experiment logs get, under the logs' column names (``epochs.csv``, run.json)."""


def _contained(action: Callable[[], object]) -> None:
    """Run an exporter's ``action``, its quitting turned into an error the tracker warns about.

    A library's ``sys.exit`` is not the training's wish to stop, nor is a KeyboardInterrupt off
    the main thread (signals reach only the main thread: it is no Ctrl-C) and it would end the
    sampler thread. On the main thread a KeyboardInterrupt is the user's, and goes through.
    """
    try:
        action()
    except SystemExit as error:
        raise RuntimeError(f"it called sys.exit({error.code!r})") from None
    except KeyboardInterrupt:
        if threading.current_thread() is threading.main_thread():
            raise
        raise RuntimeError("it raised KeyboardInterrupt off the main thread") from None


def _claim(exporter: Exporter, run: RunInfo) -> None:
    """Start ``exporter`` for ``run``, unless a run that has not stopped holds it already.

    One instance holds one run's state (a server, an experiment run): two trackers running at
    once need one each. A start that raises leaves it free.
    """
    with _BUSY_LOCK:
        if id(exporter) in _BUSY:
            raise RuntimeError(
                "it is exporting another run that has not stopped; give each Tracker its own"
            )
        _BUSY.add(id(exporter))
    try:
        exporter.start(run)
    except BaseException:
        with _BUSY_LOCK:
            _BUSY.discard(id(exporter))
        raise


def epoch_metrics(record: EpochRecord, prefix: str = "wattprint/") -> dict[str, float]:
    """An epoch's ``FIGURES`` as flat metrics (``wattprint/co2_g``, ...; unmeasured left out).

    The names every experiment log gets: the framework callbacks, MLflow, W&B, TensorBoard.
    """
    return _flat(record, FIGURES, prefix)


def summary_metrics(summary: RunSummary, prefix: str = "wattprint/total_") -> dict[str, float]:
    """The run's totals and epoch count as flat metrics (``wattprint/total_co2_g``, ...)."""
    return _flat(summary, (*FIGURES, "epochs"), prefix)


def _flat(source: EpochRecord | RunSummary, names: Sequence[str], prefix: str) -> dict[str, float]:
    values = {name: getattr(source, name) for name in names}
    return {f"{prefix}{name}": float(v) for name, v in values.items() if v is not None}


def require(module: str, extra: str, exporter: str) -> None:
    """Import ``module`` now, or raise an ``ImportError`` naming the extra that installs it.

    Exporters call it when made, so a missing library fails before the run starts, not at its end.
    """
    try:
        importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{exporter} needs the {module} package: pip install 'wattprint[{extra}]'"
        ) from error
