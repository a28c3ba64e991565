"""``Tracker``: wraps a training loop, cuts energy and emissions at epoch boundaries, writes logs.

The training loop is sacred: meters, log writes, the carbon module and user callbacks fail inside
the tracker (each marked and warned about once) and never in the caller. Only misuse of the API
itself (bad arguments, ``epoch_end`` without ``epoch_start``) raises, with a ``ValueError`` that
names the argument and what is accepted.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from backends.base import COMPONENTS, Component, Meter, Missing
from backends.discover import RAPL_READERS, RaplReader, discover
from tracker.carbon import J_PER_KWH, Carbon
from tracker.console import epoch_line, say, summary_line
from tracker.intensity import IntensitySource, resolve_intensity
from tracker.logs import LogWriter, utc_label
from tracker.notices import Notices
from tracker.records import DeviceEnergy, EpochRecord, RunSummary
from tracker.run_info import run_document
from tracker.sampler import MeterSnapshot, Sampler, TimelinePoint

logger = logging.getLogger("wattprint")

EpochCallback = Callable[[EpochRecord], object]
IntensityArg = float | str | os.PathLike[str] | IntensitySource | None
P = ParamSpec("P")
R = TypeVar("R")


class Tracker:
    """Measures a training run epoch by epoch; use as a context manager or call ``start``/``stop``.

    ``interval`` is the sampler period in seconds; ``location`` a country (ISO2/ISO3/name), a
    ``US-CA``-style state or an ``aws:``/``gcp:``/``azure:`` region (default: env
    ``WATTPRINT_LOCATION``); ``intensity`` overrides it with a constant gCO2e/kWh, a time-series CSV
    or a provider; ``pue`` defaults to the cloud provider's figure for a region, else 1.0; ``gpus``
    picks devices by index or UUID; ``meters`` replaces discovery with explicit meters.
    """

    def __init__(
        self,
        project: str = "default",
        log_dir: str | os.PathLike[str] = "wattprint-runs",
        *,
        interval: float = 0.5,
        location: str | None = None,
        intensity: IntensityArg = None,
        pue: float | None = None,
        gpus: Sequence[int | str] | None = None,
        components: Sequence[str] = COMPONENTS,
        meters: Sequence[Meter] | None = None,
        verbose: int = 1,
        on_epoch_end: Sequence[EpochCallback] = (),
        sample_period: float = 1.0,
        rapl_reader: str = "powercap",
        run_id: str | None = None,
    ) -> None:
        self.project = _validated_name("project", project)
        self.interval_s = _positive("interval", interval)
        self.sample_period_s = _positive("sample_period", sample_period)
        self.components: tuple[Component, ...] = _validated_components(components)
        if rapl_reader not in RAPL_READERS:
            raise ValueError(f"rapl_reader must be one of {RAPL_READERS}, got {rapl_reader!r}")
        self._rapl_reader: RaplReader = "pyrapl" if rapl_reader == "pyrapl" else "powercap"
        if meters is not None and not all(isinstance(m, Meter) for m in meters):
            raise ValueError("meters must be a sequence of backends.Meter instances")
        if any(not callable(fn) for fn in on_epoch_end):
            raise ValueError("on_epoch_end must be a sequence of callables taking an EpochRecord")
        self._notices = Notices()
        source, place, intensity_warnings = resolve_intensity(location, intensity)
        default_pue = place.default_pue if place is not None and place.default_pue else 1.0
        self._carbon = Carbon(source, default_pue if pue is None else pue, self._notices)
        self._location = place
        self._intensity_warnings = intensity_warnings
        self._gpus = gpus
        self._explicit_meters = list(meters) if meters is not None else None
        self.verbose = int(verbose)
        self._callbacks: list[EpochCallback] = list(on_epoch_end)
        self.run_id = run_id or _new_run_id()
        self._run_dir = Path(log_dir) / self.project / _validated_name("run_id", self.run_id)
        self._host = socket.gethostname()
        self._rank = int(os.environ.get("RANK", "0") or 0)
        self._missing: list[Missing] = []
        self._sampler: Sampler | None = None
        self._writer: LogWriter | None = None
        self._started_s = 0.0
        self._start_snapshot: dict[str, MeterSnapshot] = {}
        self._open_epoch: tuple[float, dict[str, MeterSnapshot]] | None = None
        self._epochs: list[EpochRecord] = []
        self._stopped = False
        self._status = "created"

    # -- public API ------------------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        """Where this run's logs are written: ``<log_dir>/<project>/<run_id>``."""
        return self._run_dir

    @property
    def epochs(self) -> list[EpochRecord]:
        """The epochs completed so far."""
        return list(self._epochs)

    @property
    def summary(self) -> RunSummary:
        """Totals over the completed epochs (final once ``stop()`` has run)."""
        return self._summary()

    def add_epoch_callback(self, callback: EpochCallback) -> None:
        """Call ``callback(record)`` after every epoch (e.g. to forward it to an experiment log)."""
        if not callable(callback):
            raise ValueError("add_epoch_callback needs a callable taking an EpochRecord")
        self._callbacks.append(callback)

    def start(self) -> Tracker:
        """Discover meters, open the run directory and start sampling (idempotent)."""
        if self._sampler is not None:
            return self
        if self._stopped:
            raise ValueError("this Tracker was stopped; create a new Tracker for a new run")
        for message in self._intensity_warnings:
            self._notices.warn(f"intensity:{message}", message)
        meters = self._discover()
        self._writer = LogWriter(self._run_dir, self._notices)
        self._sampler = Sampler(
            meters,
            self._carbon.co2_g,
            self._notices,
            self.interval_s,
            self.sample_period_s,
            self._write_timeline,
        )
        self._status = "running"
        self._sampler.start()
        self._started_s, self._start_snapshot = self._sampler.snapshot()
        self._writer.write_run_json(self._run_document())
        if self.verbose:
            measured = ", ".join(f"{m.info.device} ({m.info.method})" for m in meters) or "nothing"
            say(f"wattprint: run {self.run_id} measuring {measured}; logs in {self._run_dir}")
        return self

    def stop(self) -> RunSummary:
        """Close an open epoch (marked partial), stop sampling and write the final run.json."""
        if self._stopped or self._sampler is None:
            self._stopped = True
            return self._summary()
        if self._open_epoch is not None:
            self._close_epoch(partial=True)
        self._stopped = True
        if self._status == "running":
            self._status = "finished"
        end_s, end_snapshot = self._sampler.snapshot()
        self._sampler.stop()
        self._carbon.source.close()
        for message in self._carbon.source.drain_warnings():
            self._notices.warn(f"intensity:{message}", message)
        assert self._writer is not None
        self._writer.write_run_json(self._run_document(session=(end_s, end_snapshot)))
        self._writer.close()
        summary = self._summary()
        if self.verbose:
            say(summary_line(summary))
        return summary

    def epoch_start(self) -> None:
        """Mark the start of an epoch (starts the tracker on first use)."""
        if self._open_epoch is not None:
            raise ValueError(
                f"epoch_start() called while epoch {len(self._epochs) + 1} is open; "
                "call epoch_end() first"
            )
        if self._sampler is None:
            self.start()
        assert self._sampler is not None
        self._open_epoch = self._sampler.snapshot()

    def epoch_end(self) -> EpochRecord:
        """Close the open epoch: its energy per component and device, duration and gCO2e."""
        if self._open_epoch is None:
            raise ValueError("epoch_end() called without a matching epoch_start()")
        return self._close_epoch(partial=False)

    @contextmanager
    def epoch(self) -> Iterator[None]:
        """``with tracker.epoch(): ...`` brackets one epoch; an exception closes it as partial."""
        self.epoch_start()
        try:
            yield
        except BaseException:
            self._close_epoch(partial=True)
            raise
        self.epoch_end()

    def __enter__(self) -> Tracker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._status = "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"
        self.stop()

    # -- internals -------------------------------------------------------------------------------

    def _discover(self) -> list[Meter]:
        if self._explicit_meters is not None:
            meters = [m for m in self._explicit_meters if m.info.component in self.components]
        else:
            found = discover(self.components, gpus=self._gpus, rapl_reader=self._rapl_reader)
            meters, self._missing = found.meters, found.missing
        for missing in self._missing:
            fix = f" Fix: {missing.fix}" if missing.fix else ""
            self._notices.warn(
                f"missing:{missing.device}",
                f"{missing.device} not measured: {missing.reason}.{fix}",
            )
        explained = {m.component for m in self._missing}
        for component in self.components:
            if component not in explained and not any(
                m.info.component == component for m in meters
            ):
                self._notices.warn(
                    f"component:{component}",
                    f"no meter for {component}: its energy is reported as empty, not 0",
                )
        return meters

    def _close_epoch(self, partial: bool) -> EpochRecord:
        assert self._sampler is not None and self._open_epoch is not None
        start_s, start = self._open_epoch
        end_s, end = self._sampler.snapshot()
        self._open_epoch = None
        record = self._build_record(len(self._epochs) + 1, start_s, start, end_s, end, partial)
        self._epochs.append(record)
        assert self._writer is not None
        self._writer.write_epoch(record, self._provenance())
        if self.verbose:
            say(epoch_line(record))
        for callback in self._callbacks:
            try:
                callback(record)
            except Exception as error:
                name = getattr(callback, "__qualname__", repr(callback))
                self._notices.warn(f"callback:{name}", f"epoch callback {name} failed: {error!r}")
        self._sampler.call_soon(self._write_run_json)  # last: waking the thread costs GIL time
        return record

    def _write_run_json(self) -> None:
        if self._writer is not None:
            self._writer.write_run_json(self._run_document())

    def _build_record(
        self,
        epoch: int,
        start_s: float,
        start: dict[str, MeterSnapshot],
        end_s: float,
        end: dict[str, MeterSnapshot],
        partial: bool,
    ) -> EpochRecord:
        assert self._sampler is not None
        duration_s = end_s - start_s
        devices = tuple(
            self._device_energy(meter, start[meter.info.device], end[meter.info.device], duration_s)
            for meter in self._sampler.meters
        )
        co2_g = sum(
            end[m.info.device].co2_g - start[m.info.device].co2_g
            for m in self._sampler.meters
            if start[m.info.device].failed_at_s is None
        )
        by_component = {c: _component_total(devices, c) for c in COMPONENTS}
        energy_j = sum(v for v in by_component.values() if v is not None)
        energy_kwh = energy_j * self._carbon.pue / J_PER_KWH
        intensity = co2_g / energy_kwh if energy_kwh > 0 else self._carbon.intensity(start_s, end_s)
        gpus = [d for d in devices if d.component == "gpu" and d.energy_j is not None]
        gpu_peak = sum(d.peak_w for d in gpus if d.peak_w is not None) if gpus else None
        return EpochRecord(
            run_id=self.run_id,
            epoch=epoch,
            start_utc=utc_label(self._carbon.to_unix(start_s)),
            end_utc=utc_label(self._carbon.to_unix(end_s)),
            start_s=start_s,
            end_s=end_s,
            duration_s=duration_s,
            gpu_energy_j=by_component["gpu"],
            cpu_energy_j=by_component["cpu"],
            dram_energy_j=by_component["dram"],
            energy_j=energy_j,
            pue=self._carbon.pue,
            energy_kwh=energy_kwh,
            intensity_g_per_kwh=intensity,
            co2_g=co2_g,
            gpu_avg_w=_rate(by_component["gpu"], duration_s),
            gpu_peak_w=gpu_peak,
            methods=_methods(devices, self.components),
            devices=devices,
            partial=partial,
        )

    def _device_energy(
        self, meter: Meter, start: MeterSnapshot, end: MeterSnapshot, duration_s: float
    ) -> DeviceEnergy:
        info = meter.info
        if start.failed_at_s is not None:
            energy_j: float | None = None
        else:
            energy_j = end.energy_j - start.energy_j
        avg_w = _rate(energy_j, duration_s)
        peak_w = end.peak_w if end.peak_w is not None else avg_w
        if peak_w is not None and avg_w is not None:
            peak_w = max(peak_w, avg_w)
        return DeviceEnergy(
            device=info.device,
            component=info.component,
            model=info.model,
            method="failed" if end.failed_at_s is not None else info.method,
            energy_j=energy_j,
            avg_w=avg_w,
            peak_w=peak_w if energy_j is not None else None,
            host=self._host,
            rank=self._rank,
        )

    def _write_timeline(self, points: list[TimelinePoint]) -> None:
        if self._writer is not None:
            to_unix = self._carbon.to_unix
            started = self._started_s
            self._writer.write_samples((to_unix(t), t - started, d, w) for t, d, w in points)

    def _provenance(self) -> tuple[str, int | None, str]:
        p = self._carbon.source.provenance
        return (f"{p.label}: {p.source}", p.year, p.basis)

    def _summary(self) -> RunSummary:
        epochs = self._epochs
        by_component = {
            c: _sum_optional([e.component_energy_j(c) for e in epochs]) for c in COMPONENTS
        }
        energy_j = sum(e.energy_j for e in epochs)
        energy_kwh = energy_j * self._carbon.pue / J_PER_KWH
        co2_g = sum(e.co2_g for e in epochs)
        p = self._carbon.source.provenance
        nominal = self._location.g_per_kwh if self._location is not None else math.nan
        return RunSummary(
            run_id=self.run_id,
            run_dir=str(self._run_dir),
            epochs=len(epochs),
            duration_s=sum(e.duration_s for e in epochs),
            gpu_energy_j=by_component["gpu"],
            cpu_energy_j=by_component["cpu"],
            dram_energy_j=by_component["dram"],
            energy_j=energy_j,
            pue=self._carbon.pue,
            energy_kwh=energy_kwh,
            co2_g=co2_g,
            intensity_g_per_kwh=co2_g / energy_kwh if energy_kwh > 0 else nominal,
            intensity_source=f"{p.label}: {p.source} ({p.year}, {p.basis})",
            methods=epochs[-1].methods if epochs else "",
            missing=tuple(f"{m.device}: {m.reason}" for m in self._missing),
            warnings=tuple(self._notices.messages()),
        )

    def _run_document(
        self, session: tuple[float, dict[str, MeterSnapshot]] | None = None
    ) -> dict[str, Any]:
        whole_run_j = None
        if session is not None:
            _, end = session
            whole_run_j = {
                device: snap.energy_j - self._start_snapshot[device].energy_j
                for device, snap in end.items()
                if device in self._start_snapshot
            }
        return run_document(
            status=self._status,
            started_unix=self._carbon.to_unix(self._started_s),
            stopped_unix=self._carbon.to_unix(session[0]) if session is not None else None,
            host=self._host,
            rank=self._rank,
            interval_s=self.interval_s,
            meters=self._sampler.meters if self._sampler is not None else [],
            missing=self._missing,
            carbon=self._carbon,
            location=self._location,
            summary=self._summary(),
            whole_run_j=whole_run_j,
        )


@overload
def track(func: Callable[P, R], /) -> Callable[P, R]: ...
@overload
def track(
    func: None = None, /, **tracker_kwargs: Any
) -> Callable[[Callable[P, R]], Callable[P, R]]: ...
def track(func: Callable[P, R] | None = None, /, **tracker_kwargs: Any) -> Any:
    """Decorator: the whole call of the decorated function is measured as one epoch.

    ``@track`` or ``@track(project="fit", location="DE")``; arguments are those of ``Tracker``.
    """

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with Tracker(**tracker_kwargs) as tracker, tracker.epoch():
                return function(*args, **kwargs)

        return wrapper

    return decorate(func) if func is not None else decorate


def _validated_name(argument: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip() or any(c in value for c in "/\\\0"):
        raise ValueError(
            f"{argument} must be a non-empty name without path separators, got {value!r}"
        )
    return value


def _positive(argument: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{argument} must be a positive number of seconds, got {value!r}")
    if value <= 0:
        raise ValueError(f"{argument} must be a positive number of seconds (> 0), got {value}")
    return float(value)


def _validated_components(components: Sequence[str]) -> tuple[Component, ...]:
    chosen = tuple(c for c in COMPONENTS if c in components)
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown or not chosen or isinstance(components, str):
        raise ValueError(
            f"components must be a non-empty sequence drawn from {COMPONENTS}, got {components!r}"
        )
    return chosen


def _new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + secrets.token_hex(3)


def _rate(energy_j: float | None, duration_s: float) -> float | None:
    return energy_j / duration_s if energy_j is not None and duration_s > 0 else None


def _component_total(devices: Sequence[DeviceEnergy], component: Component) -> float | None:
    return _sum_optional([d.energy_j for d in devices if d.component == component])


def _sum_optional(values: Sequence[float | None]) -> float | None:
    """The sum of the known values; None when none is known (never a silent 0)."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _methods(devices: Sequence[DeviceEnergy], components: Sequence[Component]) -> str:
    """How each component was measured, e.g. ``gpu=counter;cpu=rapl;dram=estimate``."""
    parts = []
    for component in components:
        methods = sorted({str(d.method) for d in devices if d.component == component})
        parts.append(f"{component}={'+'.join(methods) if methods else 'none'}")
    return ";".join(parts)
