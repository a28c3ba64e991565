"""The lines wattprint prints: one per epoch and one per run, on stderr, when ``verbose``."""

from __future__ import annotations

import contextlib
import sys

from backends.base import COMPONENTS
from tracker.measure.predict import check_line
from tracker.records import EpochRecord, RunSummary
from tracker.units import figure, format_energy_per


def say(line: str) -> None:
    """Print one wattprint line on stderr (the training's stdout stays the user's).

    A closed or broken stderr (a pipe whose reader left) loses the line, never the training.
    """
    with contextlib.suppress(OSError, ValueError):  # ValueError: the stream was closed
        print(line, file=sys.stderr, flush=True)


def epoch_line(record: EpochRecord) -> str:
    """``wattprint epoch 3: 12.4 s, 0.00312 kWh, 1.21 gCO2e | gpu 250 W (counter) ...``."""
    parts = []
    for component in COMPONENTS:
        devices = [d for d in record.devices if d.component == component]
        if not devices:
            continue
        watts = sum(d.avg_w for d in devices if d.avg_w is not None)
        methods = "+".join(sorted({str(d.method) for d in devices}))
        parts.append(f"{component} {watts:.1f} W ({methods})")
    flag = " [partial]" if record.partial else ""
    return (
        f"wattprint epoch {record.epoch}{flag}: {record.duration_s:.2f} s, "
        f"{figure(record.facility_energy_kwh)} kWh, {figure(record.co2_g)} gCO2e"
        + (" | " + ", ".join(parts) if parts else " | nothing measured")
        + (f" | {work}" if (work := work_text(record)) else "")
    )


def summary_line(summary: RunSummary) -> str:
    """The run's totals in one line."""
    return (
        f"wattprint run {summary.run_id}: {summary.epochs} epochs, {summary.duration_s:.1f} s, "
        f"{figure(summary.facility_energy_kwh)} kWh (PUE {summary.pue:g}), "
        f"{figure(summary.co2_g)} gCO2e at "
        f"{summary.intensity_g_per_kwh:.0f} g/kWh; "
        + (f"{check_line(summary.prediction_check)}; " if summary.prediction_check else "")
        + (f"{work}; " if (work := work_text(summary)) else "")
        + f"logs in {summary.run_dir}"
    )


def work_text(figures: EpochRecord | RunSummary) -> str:
    """``1,024 samples, 3.2 J/sample IT`` for the work counted; empty where none was."""
    parts = [
        f"{count:,} {unit}s, {format_energy_per(per_j, unit)} IT"
        for unit, count, per_j in (
            ("sample", figures.samples, figures.it_energy_j_per_sample),
            ("token", figures.tokens, figures.it_energy_j_per_token),
        )
        if count is not None
    ]
    return "; ".join(parts)
