"""A run followed from its files while it is written: ``wattprint watch`` and ``run --live``.

Only the files are read (``run.json``, ``epochs.csv``, ``samples.csv``), so any process can follow
any run: from a second terminal, or on another node over a shared file system. Each poll reads what
was appended since the last one, whole lines only; a file that does not exist yet is waited for,
and one that was replaced or cut shorter (rotated, truncated, deleted and written anew) is read
again from its start. ``run.json`` is replaced atomically by the tracker; one that cannot be parsed
(or whose fields have the wrong shape) keeps the previous reading.

Energy and emissions so far are the finished epochs' (``epochs.csv``) plus the epoch in progress,
integrated from the power timeline (``samples.csv``, written at least once a second) and priced at
the last epoch's intensity; once the run has ended they are its totals from ``run.json``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from tracker.arguments import directory
from tracker.measure.predict import duration_text, prediction_line
from tracker.output.logs import current_names, read_run_json
from tracker.records import Prediction
from tracker.report.text import find_run_dir, number
from tracker.units import J_PER_KWH, figure, parse_utc

__all__ = ["LiveRun", "RunFollower", "follow", "render", "run_dir_of"]

RUN_FILES = ("run.json", "epochs.csv", "samples.csv")
MAX_READ_BYTES = 8 << 20  # read at once: a long run's timeline is parsed a piece at a time
REFRESH_PER_SECOND = 4
_PREDICTION_FIELDS = {f.name for f in dataclasses.fields(Prediction)}


@dataclass(frozen=True, slots=True)
class EpochFigures:
    """A finished epoch as epochs.csv has it; NaN where not measured."""

    epoch: int
    duration_s: float
    facility_energy_kwh: float
    co2_g: float
    partial: bool

    def line(self) -> str:
        """``epoch 3: 12.40 s, 0.00312 kWh, 1.21 gCO2e``, as a plain output line."""
        flag = " [partial]" if self.partial else ""
        return (
            f"epoch {self.epoch}{flag}: {self.duration_s:.2f} s, "
            f"{figure(self.facility_energy_kwh)} kWh, {figure(self.co2_g)} gCO2e"
        )


@dataclass(frozen=True, slots=True)
class LiveRun:
    """A followed run as it stands: what the view shows.

    ``status`` is run.json's (None until it is written); ``ended`` once it is no longer
    ``running``. Energies are facility kWh; ``None`` where nothing was measured yet.
    """

    run_dir: Path
    run_id: str
    status: str | None
    epochs: tuple[EpochFigures, ...]
    power_w: dict[str, float]
    facility_energy_kwh: float | None
    co2_g: float | None
    elapsed_s: float | None
    pue: float | None
    prediction: Prediction | None
    warnings: int = 0
    gone: str | None = None  # why it ended though run.json says running (process, directory)

    @property
    def ended(self) -> bool:
        """The run has finished, failed or was stopped (or its process or directory is gone)."""
        return self.gone is not None or self.status not in (None, "created", "running")

    def end_line(self) -> str:
        """``run 2026...: finished, 5 epochs, 0:01:02, 0.0031 kWh, 1.2 gCO2e``."""
        status = self.gone or self.status
        elapsed = duration_text(self.elapsed_s) if self.elapsed_s is not None else "n/a"
        return (
            f"run {self.run_id}: {status}, {len(self.epochs)} epochs, {elapsed}, "
            f"{figure(self.facility_energy_kwh)} kWh, {figure(self.co2_g)} gCO2e"
        )


def run_dir_of(path: str | os.PathLike[str]) -> Path:
    """The run directory at ``path``, or the newest run below it (a project or log directory).

    Raises ``FileNotFoundError`` naming ``path`` where it is not a directory or holds no run, and
    ``ValueError`` naming the run.json that is not a run's (the tracker writes it whole, always).
    """
    root = directory("RUN_DIR", path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such run directory")
    is_run = any((root / name).is_file() for name in RUN_FILES)
    run_dir = root if is_run else find_run_dir(root, "watching")
    if (run_dir / "run.json").is_file() and "totals" not in read_run_json(run_dir / "run.json"):
        raise ValueError(f"{run_dir / 'run.json'} is not a wattprint run.json (no totals)")
    return run_dir


class RunFollower:
    """Reads a run's files incrementally; ``poll()`` gives the run as it stands.

    ``host``: this machine's name as runs record it; a run recorded on it as running whose process
    no longer exists (killed by SIGKILL, say) has ended. None: never checked.
    """

    def __init__(self, run_dir: Path, host: str | None = None) -> None:
        self.run_dir = run_dir
        self.host = host
        self._epochs_file = _Tail(run_dir / "epochs.csv")
        self._samples_file = _Tail(run_dir / "samples.csv")
        self._run: dict[str, Any] = {}
        self._epochs: list[EpochFigures] = []
        self._last_end_unix: float | None = None
        self._intensity = float("nan")
        self._power_w: dict[str, float] = {}
        self._previous_s: dict[str, float] = {}  # each device's last timeline point, elapsed s
        self._open: deque[tuple[float, float]] = deque()  # (elapsed s, J) after the last edge
        self._open_j = 0.0  # their sum
        self._existed = False  # the run directory existed at the last poll

    def poll(self) -> LiveRun:
        """Read what was written since the last poll."""
        self._read_run_json()
        for rows, restarted in self._epochs_file.chunks():
            if restarted:
                self._epochs = []
            for row in rows:
                self._add_epoch(current_names(row))
        for rows, restarted in self._samples_file.chunks():
            if restarted:
                self._previous_s, self._open, self._open_j = {}, deque(), 0.0
            for row in rows:
                self._add_sample(row)
        return self._state()

    def _read_run_json(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # not there yet, not whole or not a run's
            self._run = read_run_json(self.run_dir / "run.json")  # (edited?): keep the last

    def _add_epoch(self, row: dict[str, str]) -> None:
        epoch = number(row.get("epoch"))
        if math.isnan(epoch):  # a line that is not an epoch's (cut short by a failed write)
            return
        self._epochs.append(
            EpochFigures(
                epoch=int(epoch),
                duration_s=number(row.get("duration_s")),
                facility_energy_kwh=number(row.get("facility_energy_kwh")),
                co2_g=number(row.get("co2_g")),
                partial=row.get("partial") == "true",
            )
        )
        intensity = number(row.get("intensity_g_per_kwh"))
        if not math.isnan(intensity):
            self._intensity = intensity
        with contextlib.suppress(ValueError):
            self._last_end_unix = parse_utc(row.get("end_utc") or "")

    def _add_sample(self, row: dict[str, str]) -> None:
        device, elapsed_s, power_w = (
            row.get("device"),
            number(row.get("elapsed_s")),
            number(row.get("power_w")),
        )
        if not device or math.isnan(elapsed_s) or math.isnan(power_w):
            return
        previous_s = self._previous_s.get(device, 0.0)
        self._previous_s[device] = elapsed_s
        self._power_w[device] = power_w
        energy_j = power_w * max(elapsed_s - previous_s, 0.0)
        self._open.append((elapsed_s, energy_j))
        self._open_j += energy_j

    def _state(self) -> LiveRun:
        run = self._run
        totals = current_names(run["totals"]) if isinstance(run.get("totals"), dict) else {}
        started = _unix(run.get("started_utc"))
        stopped = _unix(run.get("stopped_utc"))
        status = run.get("status") if isinstance(run.get("status"), str) else None
        pue = number(run.get("pue"))
        running = status in (None, "created", "running")
        if running:
            kwh, co2 = self._so_far(started, pue)
        else:  # ended: the tracker's own totals
            kwh = _known(number(totals.get("facility_energy_kwh")))
            co2 = _known(number(totals.get("co2_g")))
        end = stopped if stopped is not None else time.time() if running else None
        return LiveRun(
            run_dir=self.run_dir,
            run_id=str(run.get("run_id") or self.run_dir.name),
            status=status,
            epochs=tuple(self._epochs),
            power_w=dict(self._power_w),
            facility_energy_kwh=kwh,
            co2_g=co2,
            elapsed_s=end - started if started is not None and end is not None else None,
            pue=_known(pue),
            prediction=_prediction(run.get("prediction")),
            warnings=len(run.get("warnings") or ()),
            gone=self._gone(status),
        )

    def _gone(self, status: str | None) -> str | None:
        """Why a run not recorded as ended has ended: its process or its directory is gone.

        A directory not made yet (``run --live`` follows from before the run starts) is waited for.
        """
        if status not in (None, "created", "running"):
            return None
        existed, self._existed = self._existed, self.run_dir.is_dir()
        if existed and not self._existed:  # deleted: nothing more will be written
            return "run directory deleted"
        if status == "running" and _process_gone(self._run, self.host):
            return "process gone"
        return None

    def _so_far(self, started: float | None, pue: float) -> tuple[float | None, float | None]:
        """Finished epochs plus the open one from the timeline: (facility kWh, gCO2e)."""
        last_end = self._last_end_unix
        if last_end is not None and started is not None:
            edge_s = last_end - started  # the last finished epoch's end, in timeline seconds
        else:  # no epoch yet (all of the timeline is open), or none that can be placed
            edge_s = math.inf if self._epochs else 0.0
        while self._open and self._open[0][0] <= edge_s:
            self._open_j -= self._open.popleft()[1]  # counted in a finished epoch now
        if not self._open:
            self._open_j = 0.0  # no rounding left over from the subtractions
        kwh = [e.facility_energy_kwh for e in self._epochs if not math.isnan(e.facility_energy_kwh)]
        co2 = [e.co2_g for e in self._epochs if not math.isnan(e.co2_g)]
        if self._open:
            open_kwh = self._open_j * (1.0 if math.isnan(pue) else pue) / J_PER_KWH
            kwh.append(open_kwh)
            intensity = self._intensity
            if math.isnan(intensity):  # no epoch yet: the location's nominal intensity
                intensity = number((self._run.get("totals") or {}).get("intensity_g_per_kwh"))
            if not math.isnan(intensity):
                co2.append(open_kwh * intensity)
        return (sum(kwh) if kwh else None), (sum(co2) if co2 else None)


def render(run: LiveRun) -> RenderableType:
    """The live view: status, current epoch, power per device, energy and gCO2e, prediction."""
    status = run.gone or run.status or "waiting for run.json"
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    done = len(run.epochs)
    if run.ended:
        epoch = f"{done} finished"
    else:
        epoch = f"{done + 1} in progress" + (f" ({done} finished)" if done else "")
    table.add_row("epoch", epoch)
    if run.elapsed_s is not None:
        table.add_row("elapsed", duration_text(run.elapsed_s))
    for device, watts in sorted(run.power_w.items()):
        table.add_row(f"power {device}", f"{watts:.1f} W")
    if run.power_w:
        table.add_row("power total", f"{sum(run.power_w.values()):.1f} W")
    pue = f" (PUE {run.pue:g})" if run.pue is not None else ""
    so_far = "" if run.ended else " so far"
    table.add_row(f"energy{so_far}", f"{figure(run.facility_energy_kwh)} kWh{pue}")
    table.add_row(f"emissions{so_far}", f"{figure(run.co2_g)} gCO2e")
    if run.prediction is not None:
        table.add_row("prediction", prediction_line(run.prediction).split(": ", 1)[1])
        table.add_row(
            "", f"for {run.prediction.epochs} epochs, from {run.prediction.based_on_epochs}"
        )
    if run.warnings:
        table.add_row("warnings", f"{run.warnings} (wattprint report {run.run_dir})")
    title = Text.assemble(("wattprint ", "bold"), f"run {run.run_id}: ", (status, "cyan"))
    recent = [Text(e.line(), style="dim") for e in run.epochs[-3:]]
    return Group(title, table, *recent)


def follow(
    run_dir: Path,
    console: Console,
    *,
    stop: threading.Event | None = None,
    host: str | None = None,
    period_s: float = 1 / REFRESH_PER_SECOND,
) -> LiveRun:
    """Show the run until it ends (or ``stop`` is set); return it as it stood at the end.

    ``host``: this machine's name, to notice a run whose process died (``RunFollower``).

    On a terminal the view is redrawn in place a few times a second (``rich.live.Live``);
    otherwise one line per finished epoch and one at the end.
    """
    stop = stop if stop is not None else threading.Event()
    follower = RunFollower(run_dir, host)
    if console.is_terminal:
        with Live(console=console, refresh_per_second=REFRESH_PER_SECOND) as live:
            for run in _polls(follower, stop, period_s):
                live.update(render(run))
        return run
    shown = 0
    for run in _polls(follower, stop, period_s):
        shown = min(shown, len(run.epochs))  # epochs.csv was written anew
        for epoch in run.epochs[shown:]:
            console.print(epoch.line(), markup=False, highlight=False, soft_wrap=True)
        shown = len(run.epochs)
    console.print(run.end_line(), markup=False, highlight=False, soft_wrap=True)
    return run


def _polls(follower: RunFollower, stop: threading.Event, period_s: float) -> Iterator[LiveRun]:
    """The run at each poll, the last one after it ended or ``stop`` was set."""
    while True:
        stopping = stop.is_set()
        run = follower.poll()
        yield run
        if run.ended or stopping:
            return
        stop.wait(period_s)


class _Tail:
    """The rows appended to a CSV since the last read; read anew when the file is replaced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._identity: tuple[int, int] | None = None
        self._offset = 0
        self._partial = b""
        self._header: list[str] | None = None
        self._more = False  # the last read stopped short of the end of the file

    def chunks(self) -> Iterator[tuple[list[dict[str, str]], bool]]:
        """``read`` until the end of the file, at most ``MAX_READ_BYTES`` in memory at once."""
        while True:
            rows, restarted = self.read()
            yield rows, restarted
            if not self._more:
                return

    def read(self) -> tuple[list[dict[str, str]], bool]:
        """(new whole rows, whether the file was replaced or cut so earlier rows are void)."""
        self._more = False
        try:
            with open(self.path, "rb") as handle:
                status = os.fstat(handle.fileno())
                identity = (status.st_dev, status.st_ino)
                restarted = identity != self._identity or status.st_size < self._offset
                if restarted:
                    self._offset, self._partial, self._header = 0, b"", None
                handle.seek(self._offset)
                data = handle.read(MAX_READ_BYTES)
        except OSError:  # not written yet, or gone for a moment (being replaced)
            return [], False
        restarted = restarted and self._identity is not None
        self._identity = identity
        self._offset += len(data)
        self._more = len(data) == MAX_READ_BYTES
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        whole, self._partial = data[:cut], data[cut:]
        rows = []
        for fields in csv.reader(whole.decode("utf-8", "replace").splitlines()):
            if self._header is None:
                self._header = fields
            elif fields != self._header:
                rows.append(dict(zip(self._header, fields, strict=False)))
        return rows, restarted


def _unix(value: object) -> float | None:
    try:
        return parse_utc(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _known(value: float) -> float | None:
    return None if math.isnan(value) else value


def _prediction(document: object) -> Prediction | None:
    """run.json's prediction as a ``Prediction``; None where absent or not one."""
    if not isinstance(document, dict):
        return None
    fields = {k: v for k, v in current_names(document).items() if k in _PREDICTION_FIELDS}
    try:
        return Prediction(**fields)
    except TypeError:
        return None


def _process_gone(run: dict[str, Any], host: str | None) -> bool:
    """Whether run.json's process ran on ``host`` (this one) and no longer exists (killed, say)."""
    pid = run.get("pid")
    if host is None or run.get("host") != host or not isinstance(pid, int) or pid <= 0:
        return False
    if sys.platform == "win32":  # os.kill there terminates the process: never ask it
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # another user's process: it exists
        return False
    return False
