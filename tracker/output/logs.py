"""The files a run writes, and ``load_run`` to read them back with pandas.

``epochs.csv`` and ``devices.csv`` get one flushed append per epoch, so a killed process leaves
every finished epoch on disk; ``run.json`` is replaced atomically (temporary file + rename) so
it is always whole. A write that fails (directory unwritable or gone, disk full) keeps the rows
in memory, warns once, and is retried at the next write and at close; a line a failed write
left half on disk is cut off before the retry, so the files stay parseable.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from tracker.arguments import directory
from tracker.carbon.intensity import Provenance
from tracker.notices import Notices
from tracker.records import EpochRecord
from tracker.units import utc_label

if TYPE_CHECKING:
    import pandas as pd

V = TypeVar("V")

WORK_COLUMNS = ("samples", "tokens", "it_energy_j_per_sample", "it_energy_j_per_token")
"""epochs.csv's work done (``Tracker.add_work``) and IT energy per unit of it in J; empty where
not counted (never 0)."""
EPOCH_COLUMNS = (
    "run_id",
    "epoch",
    "start_utc",
    "end_utc",
    "duration_s",
    "gpu_energy_j",
    "cpu_energy_j",
    "dram_energy_j",
    "it_energy_j",
    "pue",
    "facility_energy_kwh",
    "intensity_g_per_kwh",
    "co2_g",
    "gpu_avg_w",
    "gpu_peak_w",
    "methods",
    "partial",
    "intensity_source",
    "intensity_year",
    "intensity_basis",
    # the rest of the node beyond the components, where a whole-node meter exists (else empty)
    "other_energy_j",
    *WORK_COLUMNS,
    # -- error bound (accuracy): empty where unbounded (an estimate in the epoch) --
    "it_energy_bound_j",
)
DEVICE_COLUMNS = (
    "run_id",
    "epoch",
    "host",
    "rank",
    "device",
    "kind",
    "model",
    "method",
    "energy_j",
    "avg_w",
    "peak_w",
    # -- error bound (accuracy): empty for an estimate --
    "energy_bound_j",
)
SAMPLE_COLUMNS = ("time", "elapsed_s", "device", "power_w")
RENAMED = {
    "energy_j": "it_energy_j",
    "energy_kwh": "facility_energy_kwh",
    "energy_low_j": "it_energy_low_j",
    "energy_high_j": "it_energy_high_j",
    "energy_low_kwh": "facility_energy_low_kwh",
    "energy_high_kwh": "facility_energy_high_kwh",
}
"""Epoch, totals and prediction names of runs written before IT and facility energy were named
apart; readers map them to today's (device rows keep ``energy_j``: a device's IT energy)."""
MAX_PENDING_SAMPLES = 100_000  # timeline rows held while writes fail (~8 MB); epochs: all


def current_names(row: Mapping[str, V]) -> dict[str, V]:
    """An epoch row, totals or prediction written by any wattprint, under today's names."""
    return {RENAMED.get(key, key): value for key, value in row.items()}


_SHAPES: dict[str, tuple[str, str]] = {
    "totals": ("object", "an object"),
    "prediction": ("object?", "an object or null"),
    "intensity": ("object?", "an object or null"),
    "attribution": ("object?", "an object or null"),
    "location": ("place?", "an object with code and name, or null"),
    "hardware": ("objects", "a list of objects"),
    "missing": ("objects", "a list of objects"),
    "warnings": ("list", "a list"),
    "pue": ("number?", "a number or null"),
}
"""The shape of each run.json field the readers (report, compare, watch) rely on."""


def _shaped(value: object, shape: str) -> bool:
    if value is None and shape.endswith("?"):
        return True
    match shape.rstrip("?"):
        case "object":
            return isinstance(value, dict)
        case "place":
            return isinstance(value, dict) and {"code", "name"} <= value.keys()
        case "objects":
            return isinstance(value, list) and all(isinstance(v, dict) for v in value)
        case "list":
            return isinstance(value, list)
        case _:
            return isinstance(value, int | float) and not isinstance(value, bool)


def read_run_json(path: Path) -> dict[str, Any]:
    """A run.json with its totals and prediction under today's names.

    Raises ``FileNotFoundError`` or ``ValueError`` naming the file.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (not a wattprint run directory?)")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(document, dict):
        raise ValueError(f"{path} is not a wattprint run.json")
    for key, (shape, accepted) in _SHAPES.items():
        value = document.get(key)
        if key in document and not _shaped(value, shape):
            got = f"{value!r:.60}"
            raise ValueError(f"{path}: {key} must be {accepted}, got {got} (edited by hand?)")
    for key in ("totals", "prediction"):
        if isinstance(document.get(key), dict):
            document[key] = current_names(document[key])
    check = (document.get("prediction") or {}).get("check")
    if isinstance(check, dict):
        document["prediction"]["check"] = current_names(check)
    return document


def load_run(
    run_dir: str | os.PathLike[str], *, devices: bool = False, samples: bool = False
) -> pd.DataFrame:
    """A run's ``epochs.csv`` as a DataFrame (``devices=True`` / ``samples=True``: the others)."""
    import pandas as pd

    if devices and samples:
        raise ValueError("load_run: pass at most one of devices=True and samples=True")
    name = "devices.csv" if devices else "samples.csv" if samples else "epochs.csv"
    path = directory("run_dir", run_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"load_run: {path} not found (not a wattprint run directory?)")
    frame = pd.read_csv(path)
    return frame if devices or samples else frame.rename(columns=RENAMED)


class LogWriter:
    """Appends rows to a run's CSV files and replaces its run.json, surviving write failures."""

    def __init__(self, run_dir: Path, notices: Notices) -> None:
        self.run_dir = run_dir
        self._notices = notices
        self._pending: dict[str, list[str]] = {}
        self._handles: dict[str, BinaryIO] = {}
        self._sizes: dict[str, int] = {}  # bytes of each file known to be whole on disk
        self._lock = threading.RLock()  # the timeline is written by the sampler and at edges
        self._headers = {
            "epochs.csv": _csv_line(EPOCH_COLUMNS),
            "devices.csv": _csv_line(DEVICE_COLUMNS),
            "samples.csv": _csv_line(SAMPLE_COLUMNS),
        }
        self._claim()
        for name, header in self._headers.items():
            self._append(name, [header])

    def write_epoch(self, record: EpochRecord, provenance: Provenance) -> None:
        """Append one epoch's row and its device rows, flushed to the OS before returning.

        ``provenance`` is the intensity's, written in the row's ``intensity_*`` columns.
        """
        self._append(
            "epochs.csv",
            [
                _csv_line(
                    (
                        record.run_id,
                        record.epoch,
                        record.start_utc,
                        record.end_utc,
                        record.duration_s,
                        record.gpu_energy_j,
                        record.cpu_energy_j,
                        record.dram_energy_j,
                        record.it_energy_j,
                        record.pue,
                        record.facility_energy_kwh,
                        record.intensity_g_per_kwh,
                        record.co2_g,
                        record.gpu_avg_w,
                        record.gpu_peak_w,
                        record.methods,
                        record.partial,
                        provenance.labelled_source,
                        provenance.year,
                        provenance.basis,
                        record.other_energy_j,
                        record.samples,
                        record.tokens,
                        record.it_energy_j_per_sample,
                        record.it_energy_j_per_token,
                        # -- error bound (accuracy) --
                        record.it_energy_bound_j,
                    )
                )
            ],
        )
        self._append(
            "devices.csv",
            [
                _csv_line(
                    (
                        record.run_id,
                        record.epoch,
                        d.host,
                        d.rank,
                        d.device,
                        d.component,
                        d.model,
                        d.method,
                        d.energy_j,
                        d.avg_w,
                        d.peak_w,
                        # -- error bound (accuracy) --
                        d.energy_bound_j,
                    )
                )
                for d in record.devices
            ],
        )

    def write_samples(self, rows: Iterable[tuple[float, float, str, float]]) -> None:
        """Append timeline rows: (unix time, seconds since start, device, power in W)."""
        self._append(
            "samples.csv",
            [_csv_line((utc_label(t), elapsed, device, w)) for t, elapsed, device, w in rows],
        )

    def write_run_json(self, document: dict[str, Any]) -> None:
        """Replace run.json atomically, so a reader never sees half a file."""
        path = self.run_dir / "run.json"
        temporary = path.with_name(f".run.json.{os.getpid()}.tmp")
        try:
            text = json.dumps(document, indent=2, default=str, allow_nan=False)
        except ValueError as error:
            self._notices.warn("write:run.json", f"could not write {path}: {error}")
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            with open(temporary, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(temporary, path)
        except OSError as error:
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            self._cannot_write(error)

    def close(self) -> None:
        """Write the rows still pending if writing works now, then close the CSV files."""
        for name, pending in self._pending.items():
            if pending:
                self._append(name, [])
        for handle in self._handles.values():
            with contextlib.suppress(OSError):
                handle.close()
        self._handles.clear()
        unwritten = sum(len(pending) for pending in self._pending.values())
        if unwritten:
            self._notices.warn(
                f"unwritten:{self.run_dir}",
                f"{unwritten} log rows could not be written to {self.run_dir} by the end of the "
                "run; its epochs remain in Tracker.epochs and Tracker.summary",
            )

    def _append(self, name: str, lines: Sequence[str]) -> None:
        with self._lock:
            self._append_locked(name, lines)

    def _claim(self) -> None:
        """Create the run's CSVs, failing if another run made them first (one atomic step each).

        Raises ``ValueError`` naming the directory when it already holds a run (two trackers
        given the same ``run_id`` at the same moment); a directory that cannot be written yet
        is left to the usual retries.
        """
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for name in self._headers:
                os.close(os.open(self.run_dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            raise ValueError(
                f"run_id: {self.run_dir} already holds a run; choose another run_id"
            ) from None
        except OSError:
            return

    def _append_locked(self, name: str, lines: Sequence[str]) -> None:
        pending = self._pending.setdefault(name, [])
        pending.extend(lines)
        self._reopen_if_removed(name, pending)
        if name == "samples.csv" and len(pending) > MAX_PENDING_SAMPLES:
            self._drop_oldest(name, pending)
        try:
            handle = self._handles.get(name) or self._open(name)
            handle.write("".join(pending).encode("utf-8"))
            handle.flush()
            self._sizes[name] = handle.tell()
        except OSError as error:
            self._cannot_write(error)
            broken = self._handles.pop(name, None)
            if broken is not None:
                with contextlib.suppress(OSError):
                    broken.close()
            with contextlib.suppress(OSError):  # shrinking a file needs no free space
                self._cut_back(name)
            return
        pending.clear()

    def _open(self, name: str) -> BinaryIO:
        """Open a CSV for appending, first cutting off what a failed write left half-done."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._cut_back(name)
        path = self.run_dir / name
        handle = self._handles[name] = open(path, "ab")  # noqa: SIM115 - kept open for the run
        return handle

    def _reopen_if_removed(self, name: str, pending: list[str]) -> None:
        """Start a CSV anew (header first) when it was deleted under the run, and say so.

        Writes to an open file that was unlinked succeed and are lost with it; a run whose
        directory someone removed mid-run would otherwise carry on writing nowhere.
        """
        handle = self._handles.get(name)
        if handle is None:
            return
        try:
            removed = os.fstat(handle.fileno()).st_nlink == 0
        except OSError:
            removed = True
        if not removed:
            return
        self._handles.pop(name)
        with contextlib.suppress(OSError):
            handle.close()
        self._sizes.pop(name, None)
        pending.insert(0, self._headers[name])
        self._notices.warn(
            f"removed:{self.run_dir / name}",
            f"{self.run_dir / name} was deleted during the run; it is written anew from here on, "
            "and the rows it held are lost (they remain in Tracker.epochs and the summary)",
        )

    def _cut_back(self, name: str) -> None:
        """Truncate a CSV to its last whole row, dropping a line a failed write left half-done."""
        whole = self._sizes.get(name)
        path = self.run_dir / name
        if whole is not None and path.exists() and path.stat().st_size > whole:
            os.truncate(path, whole)

    def _cannot_write(self, error: OSError) -> None:
        self._notices.warn(
            f"write:{self.run_dir}",
            f"cannot write the logs in {self.run_dir} ({error}); the run goes on, keeping what "
            "is unwritten in memory and writing it as soon as writing works again",
        )

    def _drop_oldest(self, name: str, pending: list[str]) -> None:
        first = 0 if name in self._sizes else 1  # a file never written keeps its header line
        del pending[first : first + len(pending) - MAX_PENDING_SAMPLES]
        self._notices.warn(
            f"dropped:{self.run_dir}",
            f"{self.run_dir / name}: writes have failed for long; keeping only the latest "
            f"{MAX_PENDING_SAMPLES} power timeline rows in memory (every epoch row is kept)",
        )


def _csv_line(values: Iterable[object]) -> str:
    return ",".join(_csv_field(v) for v in values) + "\n"


def _csv_field(value: object) -> str:
    if value.__class__ is float:
        return "" if value != value else format(value, ".10g")  # NaN is not equal to itself
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if _NEEDS_QUOTES.search(text):
        return '"' + text.replace('"', '""') + '"'
    return text


_NEEDS_QUOTES = re.compile(r'[,"\r\n]')
