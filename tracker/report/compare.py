"""Recorded runs side by side, each against a baseline, for energy-regression gates (``compare``).

The verdict is on IT energy (before PUE, so neither the data centre nor the grid moves it) per
unit of work: per ``sample`` or ``token`` (over the epochs that counted them), per ``epoch`` (the
mean of the completed epochs) or per ``run`` (the whole run's). Each run's ratio to the baseline
comes with a noise check from the runs' own epoch-to-epoch spread: a run's figure has a relative
standard error ``sd / sqrt(n) / mean`` of its completed epochs' per-unit values (n >= 2), and the
difference between a run and the baseline is divided by the root-sum-square of the two standard
errors (Welch's z). ``|z| >= 2`` is called beyond the noise: about a 5% false alarm rate were the
epochs independent and normally spread; epochs that drift (a warm-up, a cache) make the errors
too small, so read it as a guide, not a test. Runs measured on different hardware, in different
places or with different PUEs are compared with a note, as are runs that have not finished
(still running, failed, interrupted). The command is ``tracker.cli.compare``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tracker.measure.epochs import WorkTally
from tracker.measure.predict import duration_text
from tracker.report.text import RunFiles, hardware_text, location_text, number, read_run
from tracker.units import (
    J_PER_KWH,
    finite_or_none,
    format_energy,
    format_energy_per,
    format_mass,
    format_number,
)

__all__ = ["PER", "Comparison", "RunFigures", "compare_runs", "json_document", "markdown", "text"]

Per = Literal["sample", "token", "epoch", "run"]
PER: tuple[Per, ...] = ("sample", "token", "epoch", "run")
NOISE_Z = 2.0
"""|z| at or above which a difference is called larger than the runs' epoch-to-epoch noise."""
STATISTIC = (
    "z = (run - baseline) / sqrt(se_run^2 + se_baseline^2), se = figure x sd / sqrt(n) / mean "
    f"of the completed epochs' per-unit IT energy (n >= 2); |z| >= {NOISE_Z:g}: beyond noise"
)
_SLACK = 1e-9  # --fail-above 5 lets exactly +5% pass, whatever the float rounding


@dataclass(frozen=True, slots=True)
class RunFigures:
    """One recorded run as compared: what it ran on, its totals, and IT energy per unit in J.

    ``per_j`` holds the figure for each unit (None where the run has none); ``epoch_values`` the
    completed epochs' per-unit values, whose spread is the run's noise.
    """

    label: str
    files: RunFiles
    hardware: str
    location: str
    pue: float
    duration_s: float
    epochs: int
    it_energy_j: float
    facility_energy_kwh: float
    co2_g: float
    samples: int | None
    tokens: int | None
    per_j: dict[Per, float | None]
    epoch_values: dict[Per, list[float]]

    def relative_se(self, per: Per) -> float | None:
        """The relative standard error of the run's figure per ``per``; None under 2 epochs."""
        values = self.epoch_values[per]
        if len(values) < 2 or statistics.fmean(values) <= 0:
            return None
        return statistics.stdev(values) / math.sqrt(len(values)) / statistics.fmean(values)


@dataclass(frozen=True, slots=True)
class Verdict:
    """One run against the baseline in the chosen unit.

    ``z`` is None where either run has fewer than 2 completed epochs (and for the baseline);
    ``beyond_noise`` says whether ``|z| >= NOISE_Z``; ``exceeds`` whether the run is more than
    ``--fail-above`` percent above the baseline (False when no limit was given).
    """

    run: RunFigures
    value_j: float
    ratio: float
    change_pct: float
    relative_se: float | None
    z: float | None
    beyond_noise: bool | None
    exceeds: bool


@dataclass(frozen=True, slots=True)
class Comparison:
    """Runs against a baseline (``verdicts[0]``) per ``per``, with notes on what differs."""

    per: Per
    verdicts: list[Verdict]
    notes: list[str]
    fail_above_pct: float | None

    @property
    def failed(self) -> bool:
        """Whether a run exceeds the baseline by more than ``fail_above_pct``."""
        return any(v.exceeds for v in self.verdicts)


def compare_runs(
    runs: Sequence[str | Path],
    *,
    baseline: str | Path | None = None,
    per: str = "auto",
    fail_above: float | None = None,
) -> Comparison:
    """Compare the runs at ``runs`` (run or project directories) with ``baseline`` (or the first).

    ``per``: ``sample``, ``token``, ``epoch``, ``run`` or ``auto`` (samples where every run counted
    them, else tokens where every run did, else epochs). ``fail_above``: percent above the
    baseline beyond which ``Comparison.failed``. Raises ``ValueError`` naming the run and the unit
    where a run has no figure in that unit, and for bad arguments; ``FileNotFoundError`` for a
    directory that holds no run.
    """
    if per not in (*PER, "auto"):
        raise ValueError(f"--per must be one of {', '.join(PER)} or auto, got {per!r}")
    if fail_above is not None and (not math.isfinite(fail_above) or fail_above < 0):
        raise ValueError(f"--fail-above must be a percentage >= 0, got {fail_above!r}")
    given = [str(r) for r in runs]
    if baseline is not None:
        given.insert(0, str(baseline))
    figures: list[RunFigures] = []
    for path in given:
        found = _figures(path)
        here = found.files.run_dir.resolve()  # one run, whatever the path (links, "..")
        twin = next((f for f in figures if f.files.run_dir.resolve() == here), None)
        if twin is not None and not (baseline is not None and twin is figures[0]):
            raise ValueError(f"{path} and {twin.label} are the same run ({found.files.run_dir})")
        if twin is None:
            figures.append(found)
    if len(figures) < 2:
        raise ValueError("compare needs at least two different runs (a baseline and another)")
    unit = _unit(per, figures)
    for run in figures:
        if run.per_j[unit] is None:
            raise ValueError(_missing(run, unit))
    base = figures[0]
    base_j = base.per_j[unit]
    assert base_j is not None
    if base_j <= 0:
        raise ValueError(f"{base.label}: the baseline's IT energy per {unit} is 0; no ratio to it")
    verdicts = [_verdict(run, base, unit, fail_above) for run in figures]
    return Comparison(unit, verdicts, _notes(figures), fail_above)


# --- output ---------------------------------------------------------------------------------


def text(comparison: Comparison) -> str:
    """The runs side by side as a text table, the verdict, and the notes."""
    rows = _table(comparison)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join([*lines, "", _summary(comparison), *_note_lines(comparison)]) + "\n"


def markdown(comparison: Comparison) -> str:
    """The comparison as Markdown for a pull request comment: verdict, table, notes."""
    rows = [[cell.replace("|", "/") for cell in row] for row in _table(comparison)]
    table = [
        "| " + " | ".join(rows[0]) + " |",
        "|---" * len(rows[0]) + "|",
        *("| " + " | ".join(r) + " |" for r in rows[1:]),
    ]
    notes = [f"> {line.strip()}" for line in _note_lines(comparison)]
    return (
        "### Energy comparison\n\n"
        + f"**{_summary(comparison)}**\n\n"
        + "\n".join(table)
        + ("\n\n" + "\n>\n".join(notes) if notes else "")
        + "\n"
    )


def json_document(comparison: Comparison) -> dict[str, Any]:
    """The comparison as JSON-ready data (NaN and infinities as null)."""
    runs = []
    for v in comparison.verdicts:
        r = v.run
        figures = {
            "label": r.label,
            "run_dir": str(r.files.run_dir),
            "run_id": r.files.run.get("run_id"),
            "project": r.files.project,
            "hardware": r.hardware,
            "location": r.location,
            "pue": r.pue,
            "duration_s": r.duration_s,
            "epochs": r.epochs,
            "it_energy_j": r.it_energy_j,
            "facility_energy_kwh": r.facility_energy_kwh,
            "co2_g": r.co2_g,
            "samples": r.samples,
            "tokens": r.tokens,
            **{f"it_energy_j_per_{u}": r.per_j[u] for u in ("sample", "token", "epoch")},
            "value_j": v.value_j,
            "ratio": v.ratio,
            "change_pct": v.change_pct,
            "noise": {
                "epochs": len(r.epoch_values[comparison.per]),
                "relative_se": finite_or_none(v.relative_se),
                "z": finite_or_none(v.z),  # infinite where every epoch of both runs is alike
                "beyond_noise": v.beyond_noise,
            },
            "exceeds": v.exceeds,
        }
        runs.append({k: finite_or_none(x) for k, x in figures.items()})
    return {
        "per": comparison.per,
        "metric": f"IT energy per {comparison.per} (J)",
        "baseline": comparison.verdicts[0].run.label,
        "fail_above_pct": comparison.fail_above_pct,
        "failed": comparison.failed,
        "statistic": STATISTIC,
        "notes": comparison.notes,
        "runs": runs,
    }


# --- figures --------------------------------------------------------------------------------


def _figures(path: str) -> RunFigures:
    files = read_run(path, "comparing")
    totals = files.run["totals"]
    done = [row for row in files.epochs if row.get("partial") != "true"]
    per_j: dict[Per, float | None] = {}
    epoch_values: dict[Per, list[float]] = {}
    counts: dict[str, int | None] = {}
    for unit in ("sample", "token"):
        tally = WorkTally()
        for row in files.epochs:
            energy, co2 = number(row.get("it_energy_j")), number(row.get("co2_g"))
            tally.add(
                _count(row.get(f"{unit}s")),
                energy if math.isfinite(energy) else None,
                co2 if math.isfinite(co2) else None,
            )
        per_j[unit], counts[unit] = tally.it_energy_j_per_unit, tally.count
        epoch_values[unit] = [
            number(row.get("it_energy_j")) / n
            for row in done
            if (n := _count(row.get(f"{unit}s"))) and math.isfinite(number(row.get("it_energy_j")))
        ]
    measured = [e for row in done if math.isfinite(e := number(row.get("it_energy_j")))]
    per_j["epoch"] = statistics.fmean(measured) if measured else None
    epoch_values["epoch"] = epoch_values["run"] = measured
    it_energy_j = number(totals.get("it_energy_j"))
    per_j["run"] = it_energy_j if math.isfinite(it_energy_j) else None
    return RunFigures(
        label=str(path).rstrip("/") or str(path),
        files=files,
        hardware=hardware_text(files.run),
        location=location_text(files.run),
        pue=number(files.run.get("pue")),
        duration_s=number(totals.get("duration_s")),
        epochs=len(files.epochs),
        it_energy_j=it_energy_j,
        facility_energy_kwh=number(totals.get("facility_energy_kwh")),
        co2_g=number(totals.get("co2_g")),
        samples=counts["sample"],
        tokens=counts["token"],
        per_j=per_j,
        epoch_values=epoch_values,
    )


def _unit(per: str, runs: Sequence[RunFigures]) -> Per:
    for unit in PER:
        if per == unit:
            return unit
    if all(r.samples for r in runs):
        return "sample"
    return "token" if all(r.tokens for r in runs) else "epoch"


def _missing(run: RunFigures, unit: Per) -> str:
    where = f"{run.label} (run {run.files.run.get('run_id', '?')})"
    if unit in ("sample", "token") and not (run.samples if unit == "sample" else run.tokens):
        return (
            f"{where} counted no {unit}s, so it has no energy per {unit}; count them with "
            f"Tracker.add_work({unit}s=...) or epoch_end({unit}s=...), or compare --per epoch"
        )
    return f"{where} has no IT energy per {unit}: none of its completed epochs was measured"


def _verdict(run: RunFigures, base: RunFigures, per: Per, fail_above: float | None) -> Verdict:
    value, base_value = run.per_j[per], base.per_j[per]
    assert value is not None and base_value is not None
    ratio = value / base_value
    rse, base_rse = run.relative_se(per), base.relative_se(per)
    z: float | None = None
    if run is not base and rse is not None and base_rse is not None:
        se = math.hypot(value * rse, base_value * base_rse)
        difference = value - base_value
        if se > 0:
            z = difference / se
        else:  # every epoch of both runs alike: any difference stands out
            z = 0.0 if difference == 0 else math.copysign(math.inf, difference)
    return Verdict(
        run=run,
        value_j=value,
        ratio=ratio,
        change_pct=(ratio - 1) * 100,
        relative_se=rse,
        z=z,
        beyond_noise=None if z is None else abs(z) >= NOISE_Z,
        exceeds=fail_above is not None and (ratio - 1) * 100 > fail_above + _SLACK,
    )


def _notes(runs: Sequence[RunFigures]) -> list[str]:
    notes = []
    for what, key in (
        ("hardware", lambda r: r.hardware),
        ("locations", lambda r: r.location),
        ("PUEs", lambda r: f"{r.pue:g}"),
    ):
        seen = {key(r) for r in runs}
        if len(seen) > 1:
            listed = "; ".join(f"{r.label}: {key(r)}" for r in runs)
            notes.append(f"the runs were measured on different {what} ({listed})")
    if notes:
        notes.append(
            "the verdict compares IT energy, which PUE and grid do not change; different hardware "
            "or places change the facility energy and gCO2e beside it"
        )
    for r in runs:
        status = r.files.run.get("status")
        if status != "finished":
            recorded = f"{r.epochs} epoch{'' if r.epochs == 1 else 's'}"
            notes.append(
                f"{r.label} has not finished (status {status}): its figures are those of the "
                f"{recorded} it recorded"
            )
    return notes


# --- wording --------------------------------------------------------------------------------


def _table(comparison: Comparison) -> list[list[str]]:
    """Rows of the side-by-side table: a header of run labels, then one row per figure."""
    verdicts, per = comparison.verdicts, comparison.per
    runs = [v.run for v in verdicts]
    rows = [
        ["", *(f"{r.label} (baseline)" if i == 0 else r.label for i, r in enumerate(runs))],
        ["run", *(f"{r.files.project}/{r.files.run.get('run_id', '?')}" for r in runs)],
        ["hardware", *(r.hardware for r in runs)],
        ["location", *(r.location for r in runs)],
        ["PUE", *(f"{r.pue:g}" for r in runs)],
        ["duration", *(duration_text(r.duration_s) for r in runs)],
        ["epochs", *(str(r.epochs) for r in runs)],
        ["IT energy", *(format_energy(r.it_energy_j, 4) for r in runs)],
        ["facility energy", *(format_energy(r.facility_energy_kwh * J_PER_KWH, 4) for r in runs)],
        ["emissions", *(f"{format_mass(r.co2_g, 4)} CO2e" for r in runs)],
        ["samples", *(f"{r.samples:,}" if r.samples is not None else "-" for r in runs)],
        ["tokens", *(f"{r.tokens:,}" if r.tokens is not None else "-" for r in runs)],
        *(
            [f"IT per {u}", *(format_energy_per(r.per_j[u], u, _smallest(runs, u)) for r in runs)]
            for u in ("sample", "token", "epoch")
        ),
        [f"vs baseline (IT per {per})", *(_ratio(v, i == 0) for i, v in enumerate(verdicts))],
        ["epoch noise", *(_noise(v, per, i == 0) for i, v in enumerate(verdicts))],
    ]
    if comparison.fail_above_pct is not None:
        limit = f"+{comparison.fail_above_pct:g}%"
        rows.append(
            [
                f"gate (fail above {limit})",
                "baseline",
                *("FAIL" if v.exceeds else "pass" for v in verdicts[1:]),
            ]
        )
    return rows


def _ratio(verdict: Verdict, is_baseline: bool) -> str:
    if is_baseline:
        return "baseline"
    return f"{verdict.ratio:.3f}x ({verdict.change_pct:+.1f}%)"


def _noise(verdict: Verdict, per: Per, is_baseline: bool) -> str:
    n = len(verdict.run.epoch_values[per])
    spread = (
        f"±{format_number(verdict.relative_se * 100, 2)}% over {n} epochs"
        if verdict.relative_se is not None
        else f"unknown ({n} epoch{'' if n == 1 else 's'})"
    )
    if is_baseline or verdict.z is None:
        return spread
    z = f"z={verdict.z:+.1f}" if math.isfinite(verdict.z) else "epochs identical"
    return f"{spread}; {z}: " + ("beyond noise" if verdict.beyond_noise else "within noise")


def _summary(comparison: Comparison) -> str:
    base, others = comparison.verdicts[0], comparison.verdicts[1:]
    parts = [
        f"{v.run.label} {v.change_pct:+.1f}%"
        + (
            ""
            if v.beyond_noise is None
            else " (beyond noise)"
            if v.beyond_noise
            else " (within noise)"
        )
        for v in others
    ]
    line = f"IT energy per {comparison.per} vs {base.run.label}: " + ", ".join(parts)
    if comparison.fail_above_pct is not None:
        verdict = "FAIL" if comparison.failed else "pass"
        line += f"; gate +{comparison.fail_above_pct:g}%: {verdict}"
    return line


def _note_lines(comparison: Comparison) -> list[str]:
    return [f"note: {note}" for note in comparison.notes]


def _count(value: object) -> int | None:
    """A work count from epochs.csv; None where it is empty or not a count (a hand-edited file)."""
    count = number(value)
    return int(count) if math.isfinite(count) and count >= 0 else None


def _smallest(runs: Sequence[RunFigures], unit: Per) -> float | None:
    """The smallest known energy per ``unit`` of ``runs``: one scale for the whole table row."""
    known = [j for r in runs if (j := r.per_j[unit]) is not None and math.isfinite(j)]
    return min(known, default=None)
