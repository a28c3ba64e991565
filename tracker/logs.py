"""The files a run writes, and ``load_run`` to read them back with pandas.

``epochs.csv`` and ``devices.csv`` get one flushed append per epoch, so a killed process leaves
every finished epoch on disk; ``run.json`` is replaced atomically (temporary file + rename) so
it is always whole. A write that fails (directory gone, disk full) keeps the rows in memory,
warns once, and is retried at the next write.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from tracker.notices import Notices
from tracker.records import EpochRecord

if TYPE_CHECKING:
    import pandas as pd

EPOCH_COLUMNS = (
    "run_id",
    "epoch",
    "start_utc",
    "end_utc",
    "duration_s",
    "gpu_energy_j",
    "cpu_energy_j",
    "dram_energy_j",
    "energy_j",
    "pue",
    "energy_kwh",
    "intensity_g_per_kwh",
    "co2_g",
    "gpu_avg_w",
    "gpu_peak_w",
    "methods",
    "partial",
    "intensity_source",
    "intensity_year",
    "intensity_basis",
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
)
SAMPLE_COLUMNS = ("time", "elapsed_s", "device", "power_w")


def utc_label(unix_s: float) -> str:
    """ISO-8601 UTC with milliseconds, the only wall-clock form the logs use."""
    stamp = datetime.fromtimestamp(unix_s, tz=timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def load_run(
    run_dir: str | os.PathLike[str], *, devices: bool = False, samples: bool = False
) -> pd.DataFrame:
    """A run's ``epochs.csv`` as a DataFrame (``devices=True`` / ``samples=True``: the others)."""
    import pandas as pd

    if devices and samples:
        raise ValueError("load_run: pass at most one of devices=True and samples=True")
    name = "devices.csv" if devices else "samples.csv" if samples else "epochs.csv"
    path = Path(run_dir) / name
    if not path.is_file():
        raise FileNotFoundError(f"load_run: {path} not found (not a wattprint run directory?)")
    return pd.read_csv(path)


class LogWriter:
    """Appends rows to a run's CSV files and replaces its run.json, surviving write failures."""

    def __init__(self, run_dir: Path, notices: Notices) -> None:
        self.run_dir = run_dir
        self._notices = notices
        self._pending: dict[str, list[str]] = {}
        self._handles: dict[str, TextIO] = {}
        run_dir.mkdir(parents=True, exist_ok=True)
        for name, columns in (
            ("epochs.csv", EPOCH_COLUMNS),
            ("devices.csv", DEVICE_COLUMNS),
            ("samples.csv", SAMPLE_COLUMNS),
        ):
            self._append(name, [_csv_line(columns)])

    def write_epoch(self, record: EpochRecord, provenance: tuple[str, int | None, str]) -> None:
        """Append one epoch's row and its device rows, flushed to the OS before returning."""
        source, year, basis = provenance
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
                        record.energy_j,
                        record.pue,
                        record.energy_kwh,
                        record.intensity_g_per_kwh,
                        record.co2_g,
                        record.gpu_avg_w,
                        record.gpu_peak_w,
                        record.methods,
                        record.partial,
                        source,
                        year,
                        basis,
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
            temporary.write_text(json.dumps(document, indent=2, default=str, allow_nan=False))
            os.replace(temporary, path)
        except (OSError, ValueError) as error:
            self._notices.warn("write:run.json", f"could not write {path}: {error}")

    def close(self) -> None:
        """Close the CSV files (rows still pending stay in memory)."""
        for handle in self._handles.values():
            with contextlib.suppress(OSError):
                handle.close()
        self._handles.clear()

    def _append(self, name: str, lines: Sequence[str]) -> None:
        pending = self._pending.setdefault(name, [])
        pending.extend(lines)
        try:
            handle = self._handles.get(name)
            if handle is None:
                handle = self._handles[name] = open(  # noqa: SIM115 - kept open for the run
                    self.run_dir / name, "a", encoding="utf-8", newline=""
                )
            handle.write("".join(pending))
            handle.flush()
        except OSError as error:
            self._notices.warn(
                f"write:{name}",
                f"could not write {self.run_dir / name} ({error}); keeping rows in memory and "
                "retrying at the next epoch",
            )
            broken = self._handles.pop(name, None)
            if broken is not None:
                with contextlib.suppress(OSError):
                    broken.close()
            return
        pending.clear()


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
