"""The runs of one job, recorded by separate processes, as one run directory (``wattprint merge``).

Processes with no process group between them (one per node under SLURM, say) each record their own
run. Merging sums them epoch by epoch, as rank 0 does for a process group
(``tracker.distributed.job``), with one difference: every such process may have measured its
host's CPU packages and DRAM, so for each host and epoch only the lowest-ranked run's host-level
meters are kept (``MeterInfo.host_level``, recorded in run.json ``hardware``), and a run whose
host-level figures are dropped has its CO2 repriced for what it keeps at its own intensity. The
merged directory has the files of a run (epochs.csv, devices.csv, samples.csv, run.json with a
``merged`` section) and reads like one.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.base import COMPONENTS, Component
from tracker.carbon.intensity import Provenance
from tracker.distributed.job import RankEpoch, combine
from tracker.measure.epochs import Totals, summarise
from tracker.notices import Notices
from tracker.output.logs import LogWriter, read_run_json
from tracker.output.run_info import totals_document
from tracker.records import DeviceEnergy, EpochRecord, RunSummary
from tracker.units import parse_utc
from tracker.version import VERSION as __version__


def merge_runs(
    run_dirs: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    *,
    same_job: bool = False,
) -> RunSummary:
    """Merge the run directories of one job into ``out``; return the merged totals.

    The runs must share a SLURM job id or a run id (the ranks of a process group), or the caller
    asserts they belong together with ``same_job=True``; otherwise ``ValueError``.
    """
    if not run_dirs:
        raise ValueError("merge needs at least one run directory")
    resolved = [Path(d).resolve() for d in run_dirs]
    if len(set(resolved)) != len(resolved):
        twice = sorted({str(d) for d in resolved if resolved.count(d) > 1})
        raise ValueError(f"merge was given the same run directory twice: {', '.join(twice)}")
    runs = sorted((_read_run(Path(d), i) for i, d in enumerate(run_dirs)), key=lambda r: r.order)
    run_id = _job_id(runs, same_job)
    target = Path(out)
    if target.exists() and any(target.iterdir()):
        raise ValueError(f"--out {target} exists and is not empty; choose a new directory")
    notices = Notices(quiet=True)
    writer = LogWriter(target, notices)
    components = _components(runs)
    records: list[EpochRecord] = []
    dropped: list[dict[str, Any]] = []
    incomplete: dict[str, list[int]] = {}
    for epoch in sorted({e for run in runs for e in run.epochs}):
        present = [run for run in runs if epoch in run.epochs]
        owners = _host_owners(present, epoch)
        parts = []
        for run in present:
            part = run.epochs[epoch]
            if owners.get(run.host) != run.order:
                kept = [d for d in part.devices if d.device not in run.host_level]
                dropped += [
                    {"epoch": epoch, "host": run.host, "rank": run.rank, "device": d.device}
                    | {"energy_j": d.energy_j}
                    for d in part.devices
                    if d.device in run.host_level
                ]
                part = part.keeping(kept)
            parts.append(part)
        if len(present) < len(runs):
            incomplete[str(epoch)] = [run.rank for run in runs if run not in present]
        record = combine(run_id, epoch, parts, components, complete=len(present) == len(runs))
        records.append(record)
        writer.write_epoch(record, _provenance(runs, epoch))
    writer.write_samples(_samples(runs))
    summary = summarise(
        run_id,
        str(target),
        Totals.of(records),
        runs[0].document.get("totals", {}).get("intensity_source", ""),
        missing=[f"{r.host} rank {r.rank} {m}" for r in runs for m in _missing(r)],
        warnings=[
            f"{r.host} rank {r.rank}: {w}" for r in runs for w in r.document.get("warnings", [])
        ],
    )
    writer.write_run_json(_document(runs, run_id, summary, dropped, incomplete))
    writer.close()
    if failures := notices.messages():  # nothing merged may pass for written
        raise ValueError(f"--out {target}: the merged run could not be written ({failures[0]})")
    return summary


@dataclass(frozen=True, slots=True)
class _Run:
    """One run directory as merge needs it: who recorded it, where, and its epochs."""

    directory: Path
    order: tuple[int, int]  # (rank, position on the command line): lower wins a host's meters
    document: dict[str, Any]
    host: str
    rank: int
    host_level: frozenset[str]
    epochs: dict[int, RankEpoch]
    provenance: dict[int, Provenance]


def _read_run(directory: Path, position: int) -> _Run:
    try:
        return _parse_run(directory, position)
    except (KeyError, TypeError) as error:
        raise ValueError(f"{directory}: not a readable wattprint run ({error!r})") from error


def _parse_run(directory: Path, position: int) -> _Run:
    document = read_run_json(directory / "run.json")
    if document.get("merged") is not None:
        raise ValueError(
            f"{directory} is already a merged run; merge the runs it was made from instead"
        )
    if (document.get("distributed") or {}).get("role") == "job":
        raise ValueError(
            f"{directory} already holds a whole job's totals; merge its rank-N directories instead"
        )
    host = str(document.get("host") or "")
    rank = int(document.get("rank") or 0)
    hardware = document.get("hardware") or []
    host_level = frozenset(str(h["device"]) for h in hardware if h.get("host_level"))
    devices: dict[int, list[DeviceEnergy]] = {}
    for row in _rows(directory / "devices.csv"):
        devices.setdefault(int(row["epoch"]), []).append(_device(row))
    epochs: dict[int, RankEpoch] = {}
    provenance: dict[int, Provenance] = {}
    for row in _rows(directory / "epochs.csv"):
        epoch = int(row["epoch"])
        epochs[epoch] = RankEpoch(
            rank=rank,
            host=host,
            epoch=epoch,
            start_utc=row["start_utc"],
            end_utc=row["end_utc"],
            duration_s=float(row["duration_s"]),
            pue=float(row["pue"]),
            intensity_g_per_kwh=_number(row["intensity_g_per_kwh"]) or math.nan,
            co2_g=_number(row["co2_g"]),
            partial=row.get("partial") == "true",
            devices=tuple(devices.get(epoch, [])),
            samples=_count(row.get("samples")),
            tokens=_count(row.get("tokens")),
        )
        year = _number(row.get("intensity_year", ""))
        provenance[epoch] = Provenance(  # the column holds "label: source" as one text
            label="",
            source=row.get("intensity_source", ""),
            year=int(year) if year is not None else None,
            basis=row.get("intensity_basis", ""),
        )
    return _Run(directory, (rank, position), document, host, rank, host_level, epochs, provenance)


def _job_id(runs: Sequence[_Run], same_job: bool) -> str:
    """The merged run's id, once the runs are shown (or asserted) to be one job's."""
    slurm = {str((r.document.get("slurm") or {}).get("job_id") or "") for r in runs}
    run_ids = {str(r.document.get("run_id")) for r in runs}
    if len(run_ids) == 1:
        return run_ids.pop()
    if len(slurm) == 1 and "" not in slurm:
        return f"slurm-{slurm.pop()}"
    if not same_job:
        named = ", ".join(sorted(s for s in slurm if s)) or "none recorded"
        raise ValueError(
            "the runs share neither a SLURM job id (found: "
            f"{named}) nor a run id; pass --same-job if they are one job"
        )
    return f"{runs[0].document.get('run_id')}-merged"


def _host_owners(runs: Sequence[_Run], epoch: int) -> dict[str, tuple[int, int]]:
    """For each host, the run whose host-level figures count this epoch: the lowest-ranked one."""
    owners: dict[str, tuple[int, int]] = {}
    for run in runs:
        measured = any(d.device in run.host_level for d in run.epochs[epoch].devices)
        if measured and run.host not in owners:
            owners[run.host] = run.order
    return owners


def _components(runs: Sequence[_Run]) -> tuple[Component, ...]:
    seen: set[str] = {
        d.component for run in runs for part in run.epochs.values() for d in part.devices
    }
    for run in runs:
        for row in _rows(run.directory / "epochs.csv"):
            seen.update(item.split("=")[0] for item in row.get("methods", "").split(";"))
    return tuple(c for c in COMPONENTS if c in seen)


def _provenance(runs: Sequence[_Run], epoch: int) -> Provenance:
    """The intensities of the runs that have ``epoch``: each distinct source and basis once."""
    found = [run.provenance[epoch] for run in runs if epoch in run.provenance]
    years = {p.year for p in found}
    return Provenance(
        label="",
        source=" + ".join(dict.fromkeys(p.labelled_source for p in found)),
        year=years.pop() if len(years) == 1 else None,
        basis=" + ".join(dict.fromkeys(p.basis for p in found)),
    )


def _samples(runs: Sequence[_Run]) -> list[tuple[float, float, str, float]]:
    """Every run's power timeline, device names prefixed by host and rank; a host's meters once."""
    owner: dict[str, tuple[int, int]] = {}
    for run in runs:
        if run.host_level and run.host not in owner:
            owner[run.host] = run.order
    rows = []
    for run in runs:
        for row in _rows(run.directory / "samples.csv"):
            device = row["device"]
            if device in run.host_level and owner.get(run.host) != run.order:
                continue
            unix = parse_utc(row["time"])
            label = f"{run.host}/rank{run.rank}/{device}"
            rows.append((unix, float(row["elapsed_s"]), label, float(row["power_w"])))
    return sorted(rows)


def _document(
    runs: Sequence[_Run],
    run_id: str,
    summary: RunSummary,
    dropped: list[dict[str, Any]],
    incomplete: dict[str, list[int]],
) -> dict[str, Any]:
    first = runs[0].document
    statuses = [str(r.document.get("status")) for r in runs]
    stops = [r.document.get("stopped_utc") for r in runs]
    hosts = sorted({r.host for r in runs})
    return {
        "wattprint_version": __version__,
        "run_id": run_id,
        "status": next((s for s in statuses if s != "finished"), "finished"),
        "started_utc": min(str(r.document.get("started_utc")) for r in runs),
        "stopped_utc": None if None in stops else max(str(s) for s in stops),
        "host": ", ".join(hosts),
        "rank": None,
        "slurm": first.get("slurm"),
        "distributed": None,
        "pue": summary.pue,
        "hardware": [h | {"host": r.host, "rank": r.rank} for r in runs for h in _hardware(r)],
        "missing": [m | {"host": r.host, "rank": r.rank} for r in runs for m in _missing_docs(r)],
        "location": first.get("location"),
        "intensity": first.get("intensity"),
        "totals": totals_document(summary),
        "whole_run_energy_j": None,
        "prediction": None,
        "warnings": list(summary.warnings),
        "merged": {
            "hosts": hosts,
            "runs": [
                {"dir": str(r.directory), "run_id": r.document.get("run_id"), "host": r.host}
                | {"rank": r.rank, "slurm": r.document.get("slurm"), "epochs": len(r.epochs)}
                for r in runs
            ],
            "host_level_dropped": dropped,
            "incomplete_epochs": incomplete,
        },
    }


def _hardware(run: _Run) -> list[dict[str, Any]]:
    return list(run.document.get("hardware") or [])


def _missing_docs(run: _Run) -> list[dict[str, Any]]:
    return list(run.document.get("missing") or [])


def _missing(run: _Run) -> list[str]:
    return [f"{m.get('device')}: {m.get('reason')}" for m in _missing_docs(run)]


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (not a wattprint run directory?)")
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _device(row: dict[str, str]) -> DeviceEnergy:
    component: Component = "gpu"
    for known in COMPONENTS:
        if row["kind"] == known:
            component = known
    return DeviceEnergy(
        device=row["device"],
        component=component,
        model=row["model"],
        method=row["method"],
        energy_j=_number(row["energy_j"]),
        avg_w=_number(row["avg_w"]),
        peak_w=_number(row["peak_w"]),
        host=row["host"],
        rank=int(row["rank"]),
        energy_bound_j=_number(row.get("energy_bound_j")),  # absent in older runs
    )


def _number(text: str | None) -> float | None:
    return float(text) if text not in (None, "") else None


def _count(text: str | None) -> int | None:
    """A work count from epochs.csv; None where it is empty or the run predates the column."""
    return int(text) if text not in (None, "") else None
