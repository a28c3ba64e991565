"""The contents of ``run.json``: what ran where, how it was measured, totals and warnings."""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
from collections.abc import Sequence
from typing import Any

from backends.attribution import Decision, SharedMeter
from backends.base import Component, Meter, Missing
from tracker.carbon.locations import Location
from tracker.carbon.pricing import Carbon
from tracker.measure.coverage import coverage, not_measured
from tracker.measure.sampler import MeterSnapshot
from tracker.records import Prediction, PredictionCheck, RunSummary
from tracker.units import finite_or_none, utc_label
from tracker.version import VERSION as __version__


def run_document(
    *,
    status: str,
    started_unix: float,
    stopped_unix: float | None,
    host: str,
    rank: int,
    interval_s: float,
    meters: Sequence[Meter],
    missing: Sequence[Missing],
    components: Sequence[Component],
    carbon: Carbon,
    location: Location | None,
    summary: RunSummary,
    whole_run: tuple[dict[str, MeterSnapshot], dict[str, MeterSnapshot]] | None,
    slurm: dict[str, str] | None = None,
    job: dict[str, Any] | None = None,
    command: dict[str, Any] | None = None,
    attribution: Decision | None = None,
) -> dict[str, Any]:
    """A JSON-ready description of the run as it stands.

    ``slurm``: the SLURM job, step and task the process ran in; ``job``: its part in a distributed
    job (``tracker.distributed.process_group``); ``command``: the measured command and its exit
    code; ``attribution``: whether the job's share or the host's whole was measured, and why.
    """
    provenance = carbon.source.provenance
    covered = coverage(meters, missing, components)
    return {
        "wattprint_version": __version__,
        "run_id": summary.run_id,
        "status": status,
        "started_utc": utc_label(started_unix),
        "stopped_utc": utc_label(stopped_unix) if stopped_unix is not None else None,
        "host": host,
        "rank": rank,
        "slurm": slurm,
        "distributed": job,
        "command": command,
        "pid": os.getpid(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "interval_s": interval_s,
        "pue": carbon.pue,
        "hardware": [dataclasses.asdict(m.info) | {"fast": m.fast} for m in meters],
        "coverage": {c.component: c.state for c in covered},
        "estimated": [
            dataclasses.asdict(gap) for c in covered if c.state == "estimated" for gap in c.missing
        ],
        "missing": [dataclasses.asdict(gap) for gap in not_measured(meters, missing, components)],
        "location": dataclasses.asdict(location) if location is not None else None,
        "intensity": {
            "label": provenance.label,
            "source": provenance.source,
            "year": provenance.year,
            "basis": provenance.basis,
            "series_used": [[utc_label(t), g] for t, g in carbon.source.series_used()],
        },
        "attribution": attribution_document(attribution, meters),
        "totals": totals_document(summary),
        "whole_run_energy_j": _whole_run_j(*whole_run) if whole_run is not None else None,
        "prediction": prediction_document(summary.prediction, summary.prediction_check),
        "warnings": list(summary.warnings),
    }


def totals_document(summary: RunSummary) -> dict[str, Any]:
    """``run.json``'s "totals": the summary's figures (its prediction has a section of its own)."""
    return {
        k: finite_or_none(v)
        for k, v in dataclasses.asdict(summary).items()
        if k not in ("prediction", "prediction_check")
    }


def attribution_document(
    decision: Decision | None, meters: Sequence[Meter]
) -> dict[str, Any] | None:
    """``run.json``'s "attribution": the mode, why, and per shared device job and host in J.

    ``devices`` holds each meter that gives the job's share of a shared device: the job's and
    the host's (or whole GPU's) energy over the same reads since the run started, and the share.
    """
    if decision is None:
        return None
    devices = {}
    for meter in meters:
        if isinstance(meter, SharedMeter):
            job_j, host_j = meter.totals()
            devices[meter.info.device] = {
                "attribution": meter.info.attribution,
                "job_energy_j": job_j,
                "host_energy_j": host_j,
                "share": job_j / host_j if host_j > 0 else None,
            }
    return {
        "mode": decision.mode,
        "requested": decision.requested,
        "reason": decision.reason,
        "devices": devices,
    }


def prediction_document(
    prediction: Prediction | None, comparison: PredictionCheck | None
) -> dict[str, Any] | None:
    """``run.json``'s "prediction": the prediction's fields, and "check" once the run has one."""
    if prediction is None:
        return None
    document = _json_fields(prediction)
    document["check"] = _json_fields(comparison) if comparison is not None else None
    return document


def _json_fields(record: Prediction | PredictionCheck) -> dict[str, Any]:
    """A record's fields for run.json, NaN and infinities as null."""
    return {k: finite_or_none(v) for k, v in dataclasses.asdict(record).items()}


def _whole_run_j(
    start: dict[str, MeterSnapshot], end: dict[str, MeterSnapshot]
) -> dict[str, float]:
    """Each meter's energy from start to stop, in J, gaps between epochs included."""
    return {d: snap.energy_j - start[d].energy_j for d, snap in end.items() if d in start}
