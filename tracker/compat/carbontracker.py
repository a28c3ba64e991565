"""``CarbonTracker``: carbontracker 2.x's class on top of wattprint; change the import only.

Same constructor arguments and defaults as carbontracker 2.x (``carbontracker/tracker.py``), same
methods (``epoch_start``, ``epoch_end``, ``stop``, ``set_api_keys``) and the same "Predicted
consumption" / "Actual consumption" blocks on stdout, prefixed ``CarbonTracker:``. Measurement,
logs and carbon are wattprint's: the run is written to ``<log_dir>/<project>/<run_id>/`` like any
other, and the figures are attributes (``final_emissions_reported``, ``prediction``, ...).

Where a meaning differs it is said here, and arguments wattprint cannot honour warn (logged and in
run.json) rather than being silently ignored:

- ``components``: "all", "gpu", "cpu" or "gpu,cpu"; "cpu" also counts DRAM (carbontracker reads
  the RAPL package domain only), listed separately in the logs.
- ``ignore_errors``: wattprint never ends training over a measurement error, whatever the value
  (carbontracker exits with status 70 when it is False); failures are marked and warned about.
- ``devices_by_pid=True``: not supported; the GPUs this process can see (``CUDA_VISIBLE_DEVICES``)
  are measured. ``api_keys``: wattprint does no geo-IP lookup, so it cannot choose a live zone;
  pass ``intensity=ElectricityMaps("DE")`` (token in env ``ELECTRICITYMAPS_TOKEN``) instead.
- ``log_dir=None``: carbontracker then writes no log; wattprint writes to ``wattprint-runs``.
  ``log_file_prefix`` starts the run id.
- ``stop_and_confirm``: asks on stdin after the prediction, and answering "n" ends the program
  with status 0 (``SystemExit``), as carbontracker does, after the logs are written. When stdin
  is not a terminal it does not ask (nobody could answer) and says so.
- ``sim_cpu`` + ``sim_cpu_tdp`` (W) simulate the CPU as one device drawing ``sim_cpu_tdp x
  sim_cpu_util`` (default utilisation 0.5), as carbontracker's ``SimulatedCPUHandler``: the TDP is
  the whole simulated CPU's, not per socket. ``sim_gpu`` + ``sim_gpu_watts`` likewise for the
  GPU. Both are labelled method ``estimate``. One of a pair without the other is ignored by
  carbontracker; here that warns.
- PUE: carbontracker multiplies by a fixed 1.58 (Uptime Institute 2023 global average,
  ``constants.PUE_2023``); wattprint uses the cloud region's PUE, else 1.0. Pass ``pue=1.58`` to
  compare like with like. Keyword-only extras ``project``, ``location``, ``intensity``, ``pue``
  and ``exporters`` (``tracker.exporters``), ``attribution`` take wattprint's meaning.
- Work (a wattprint extra): ``epoch_end(samples=..., tokens=...)`` and ``add_work`` count the
  epoch's samples and tokens, for the IT energy per sample and per token in the run's files.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backends.base import COMPONENTS
from tracker import arguments
from tracker.arguments import MIN_INTERVAL_S
from tracker.carbon.equivalents import equivalents
from tracker.carbon.intensity import IntensityArg
from tracker.compat.arguments import (
    api_key_notes,
    components_of,
    run_id_with,
    simulated_meters,
)
from tracker.exporters.base import Exporter
from tracker.measure.predict import clock
from tracker.records import Prediction, RunSummary
from tracker.tracker import Tracker
from tracker.units import figure

logger = logging.getLogger(__name__)

PREFIX = "CarbonTracker: "


class CarbonTracker:
    """carbontracker's ``CarbonTracker``, measured and logged by a wattprint ``Tracker``.

    ``epochs`` is the training's epochs; the prediction is printed after ``epochs_before_pred``
    (-1: all, 0: none); monitoring ends after ``monitor_epochs`` (-1: all), printing the actual
    consumption and setting ``final_emissions_reported`` (gCO2e). See the module for each
    argument's meaning here.
    """

    def __init__(
        self,
        epochs: int,
        epochs_before_pred: int = 1,
        monitor_epochs: int = -1,
        update_interval: float = 1,
        interpretable: bool = True,
        stop_and_confirm: bool = False,
        ignore_errors: bool = False,
        components: str = "all",
        devices_by_pid: bool = False,
        log_dir: str | os.PathLike[str] | None = None,
        log_file_prefix: str = "",
        verbose: int = 1,
        decimal_precision: int = 12,
        api_keys: dict[str, str] | None = None,
        sim_cpu: str | None = None,
        sim_cpu_tdp: float | None = None,
        sim_cpu_util: float | None = None,
        sim_gpu: str | None = None,
        sim_gpu_watts: float | None = None,
        sim_gpu_util: float | None = None,
        *,
        project: str = "carbontracker",
        location: str | None = None,
        intensity: IntensityArg = None,
        pue: float | None = None,
        exporters: Sequence[Exporter] = (),
        attribution: str | None = None,
        sync: bool | str = "auto",
    ) -> None:
        self.epochs = arguments.integer("epochs", epochs, 1)
        before = arguments.integer("epochs_before_pred", epochs_before_pred, -1)
        self.epochs_before_pred = self.epochs if before < 0 else before
        monitor = arguments.integer("monitor_epochs", monitor_epochs, -1)
        self.monitor_epochs = self.epochs if monitor < 0 else monitor
        if self.monitor_epochs == 0 or self.monitor_epochs < self.epochs_before_pred:
            raise ValueError(
                "monitor_epochs must be -1, or > 0 and >= epochs_before_pred "
                f"({self.epochs_before_pred}), got {monitor_epochs}"
            )
        interval_s = arguments.seconds("update_interval", update_interval, MIN_INTERVAL_S)
        self.interpretable = bool(interpretable)
        self.stop_and_confirm = bool(stop_and_confirm)
        self.ignore_errors = bool(ignore_errors)
        verbosity = int(verbose) if isinstance(verbose, bool) else verbose
        self.verbose = arguments.integer("verbose", verbosity, 0)
        self.decimal_precision = arguments.integer("decimal_precision", decimal_precision, 0)
        self.epoch_counter = 0
        self.deleted = False
        self.final_emissions_reported: float | None = None
        self.summary: RunSummary | None = None
        self.prediction: Prediction | None = None
        chosen = components_of(components)
        meters, notes = simulated_meters(
            chosen, sim_cpu, sim_cpu_tdp, sim_cpu_util, sim_gpu, sim_gpu_watts, sim_gpu_util
        )
        notes += api_key_notes(api_keys)
        if devices_by_pid:
            notes.append(
                "devices_by_pid=True is not supported: wattprint measures the GPUs this process "
                "can see (CUDA_VISIBLE_DEVICES), not only those running its processes"
            )
        self.tracker = Tracker(
            project,
            "wattprint-runs" if log_dir is None else log_dir,
            interval=interval_s,
            location=location,
            intensity=intensity,
            pue=pue,
            components=chosen,
            meters=meters,
            verbose=1 if self.verbose >= 2 else 0,
            run_id=run_id_with(log_file_prefix),
            epochs=self.epochs,
            epochs_before_pred=self.epochs_before_pred,
            exporters=exporters,
            attribution=attribution,
            sync=sync,
        )
        for note in notes:
            self._warn(note)
        self.tracker.start()
        self._output(f"The following components were found: {_found(self.tracker.run_dir)}.")
        self._output(f"Logs in {self.tracker.run_dir}", level=2)

    # -- carbontracker's methods -----------------------------------------------------------------

    def epoch_start(self) -> None:
        """Start measuring an epoch (nothing once monitoring has ended)."""
        if self.deleted:
            return
        try:
            self.tracker.epoch_start()
        except ValueError as error:  # misuse must not end a carbontracker script
            self._warn(f"{error}; ignored")
            return
        self.epoch_counter += 1

    def epoch_end(self, *, samples: int | None = None, tokens: int | None = None) -> None:
        """End the epoch; prints the prediction and, after ``monitor_epochs``, the actual total.

        ``samples``/``tokens`` (a wattprint extra): the epoch's work, as ``add_work`` counts it.
        """
        if self.deleted:
            return
        self.add_work(samples=samples, tokens=tokens)
        try:
            self.tracker.epoch_end()
        except ValueError as error:
            self._warn(f"{error}; ignored")
            return
        if self.epoch_counter == self.epochs_before_pred:
            self.prediction = self.tracker.summary.prediction
            if self.prediction is not None:
                self._output(self._predicted_block(self.prediction))
            if self.stop_and_confirm:
                self._confirm()
        if self.epoch_counter == self.monitor_epochs:
            self._finish()

    def add_work(self, *, samples: int | None = None, tokens: int | None = None) -> None:
        """Count work in the open epoch, for energy per sample and per token (a wattprint extra).

        A bad count is warned about and left out: misuse never ends a carbontracker script.
        """
        if self.deleted or (samples is None and tokens is None):
            return
        try:
            self.tracker.add_work(samples=samples, tokens=tokens)
        except ValueError as error:
            self._warn(f"{error}; not counted")

    def stop(self) -> None:
        """End monitoring early (an open epoch counts as interrupted) and print the actual total."""
        if self.deleted:
            return
        logger.info(
            "wattprint: training was interrupted before all %d epochs were monitored",
            self.monitor_epochs,
        )
        self._finish()

    def set_api_keys(self, api_dict: dict[str, str]) -> None:
        """Check ``api_dict`` as carbontracker's setter would, then warn that it is not used."""
        for note in api_key_notes(api_dict):
            self._warn(note)

    # -- the numbers -----------------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        """Where the run's logs are written."""
        return self.tracker.run_dir

    @property
    def predicted_emissions(self) -> float | None:
        """Predicted gCO2e of all ``epochs``, once predicted."""
        return self.prediction.co2_g if self.prediction is not None else None

    @property
    def predicted_energy_kwh(self) -> float | None:
        """Predicted facility energy (kWh, PUE included) of all ``epochs``, once predicted."""
        return self.prediction.facility_energy_kwh if self.prediction is not None else None

    @property
    def predicted_duration_s(self) -> float | None:
        """Predicted duration (s) of all ``epochs``, once predicted."""
        return self.prediction.duration_s if self.prediction is not None else None

    @property
    def actual_emissions(self) -> float | None:
        """gCO2e of the epochs measured so far; None when nothing was measured."""
        return (self.summary or self.tracker.summary).co2_g

    @property
    def actual_energy_kwh(self) -> float | None:
        """Facility energy (kWh) of the epochs measured so far; None when nothing was measured."""
        return (self.summary or self.tracker.summary).facility_energy_kwh

    @property
    def actual_duration_s(self) -> float:
        """Duration (s) of the epochs measured so far."""
        return (self.summary or self.tracker.summary).duration_s

    # -- internals -------------------------------------------------------------------------------

    def _finish(self) -> None:
        self.deleted = True
        self.summary = self.tracker.stop()
        self.final_emissions_reported = self.summary.co2_g
        self._output(self._actual_block(self.summary))
        self._output("Finished monitoring.")

    def _confirm(self) -> None:
        stdin = sys.stdin
        if stdin is None or not stdin.isatty():
            self._output("stop_and_confirm: stdin is not a terminal, so not asking; continuing.")
            return
        self._output("Continue training (y/n)?", level=0)
        while True:
            try:
                answer = input().strip().lower()
            except EOFError:
                self._output("No answer (end of input); continuing.", level=0)
                return
            if answer == "y":
                self._output("Continuing...", level=0)
                return
            if answer == "n":
                logger.info("wattprint: session ended by the user at the prediction")
                self._finish()
                self._output("Quitting...", level=0)
                raise SystemExit(0)
            self._output("Input not recognized. Try again (y/n):", level=0)

    def _predicted_block(self, p: Prediction) -> str:
        extra = []
        if p.based_on_epochs >= 2:
            d = self.decimal_precision
            extra.append(
                f"\tRange:\t{p.facility_energy_low_kwh:.{d}f}-"
                f"{p.facility_energy_high_kwh:.{d}f} kWh, "
                f"{p.co2_low_g:.{d}f}-{p.co2_high_g:.{d}f} g (cheapest to costliest epoch)"
            )
        title = f"Predicted consumption for {p.epochs} epoch(s):"
        return self._block(title, p.duration_s, p.facility_energy_kwh, p.co2_g, extra)

    def _actual_block(self, summary: RunSummary) -> str:
        records = self.tracker.epochs
        complete = sum(1 for r in records if not r.partial)
        extra = [
            f"\t(includes the interrupted epoch {r.epoch}, {clock(r.duration_s)})"
            for r in records
            if r.partial
        ]
        title = (
            "Actual consumption:"
            if self.epochs_before_pred == 0
            else f"Actual consumption for {complete} epoch(s):"
        )
        return self._block(
            title, summary.duration_s, summary.facility_energy_kwh, summary.co2_g, extra
        )

    def _block(
        self,
        title: str,
        duration_s: float,
        energy_kwh: float | None,
        co2_g: float | None,
        extra: list[str],
    ) -> str:
        d = self.decimal_precision
        lines = [
            "",
            title,
            f"\tTime:\t{clock(duration_s)}",
            f"\tEnergy:\t{figure(energy_kwh, f'.{d}f')} kWh",
            f"\tCO2eq:\t{figure(co2_g, f'.{d}f')} g",
            *extra,
        ]
        if self.interpretable and co2_g is not None and math.isfinite(co2_g) and co2_g >= 0:
            car = equivalents(co2_g)[0]
            lines += ["\tThis is equivalent to:", f"\t{car.value:.{d}f} {car.unit} {car.label}"]
        return "\n".join(lines)

    def _output(self, message: str, level: int = 1) -> None:
        if self.verbose >= level:
            print(PREFIX + message, flush=True)

    def _warn(self, message: str) -> None:
        # Tracker's notices log the message once and keep it for run.json and the report.
        self.tracker._notices.warn(f"carbontracker:{message}", f"CarbonTracker: {message}")


def _found(run_dir: Path) -> str:
    """``GPU with device(s) gpu0 (counter). CPU with device(s) cpu0 (rapl), dram0 (rapl)``."""
    try:
        hardware: list[dict[str, Any]] = json.loads((run_dir / "run.json").read_text())["hardware"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"see {run_dir / 'run.json'}"
    parts = []
    for component in COMPONENTS:
        devices = [h for h in hardware if h.get("component") == component]
        if devices:
            listed = ", ".join(f"{h['device']} ({h['model']}, {h['method']})" for h in devices)
            parts.append(f"{component.upper()} with device(s) {listed}")
    return ". ".join(parts) or "none"
