"""A recorded run at a glance, and an emissions statement to paste (``wattprint report``).

Reads only the files a run wrote (``run.json``, ``epochs.csv``, ``devices.csv``) with the csv and
json modules, so a report works on a copied run directory, without the machine or pandas. The text
report (``text_report``) has the per-epoch table, totals per component with everyday equivalents,
the prediction against the actual, provenance and every warning; ``markdown_statement`` is a short
statement for a paper or a model card. ``tracker.report.plot`` draws the run (needs matplotlib);
the command is ``tracker.cli.report``.
"""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from backends.base import COMPONENTS, EVERY_OTHER_DEVICE
from tracker.arguments import directory
from tracker.carbon.equivalents import equivalents
from tracker.measure.predict import duration_text
from tracker.output.logs import current_names, read_run_json
from tracker.units import format_co2_per, format_energy_per, format_mass

__all__ = [
    "RunFiles",
    "find_run_dir",
    "hardware_text",
    "location_text",
    "markdown_statement",
    "read_run",
    "text_report",
]

J_PER_WH = 3600.0
_METHOD_WORDS = {
    "counter": "energy counter",
    "power": "power readings, integrated over time",
    "node-share": "the node controller's meter of it",
    "rapl": "RAPL energy counters",
    "estimate": "estimated",
    "failed": "lost during the run",
}


@dataclass(frozen=True, slots=True)
class RunFiles:
    """What a run directory holds: run.json as parsed, and the CSV rows as text fields."""

    run_dir: Path
    run: dict[str, Any]
    epochs: list[dict[str, str]]
    devices: list[dict[str, str]]

    @property
    def project(self) -> str:
        """The project: the name of the directory above the run's."""
        return self.run_dir.parent.name


def find_run_dir(path: str | Path, doing: str = "reporting") -> Path:
    """``path`` if it holds run.json, else the newest run below it (a project or log directory).

    Says which run it chose on stderr (``doing``: what is done with it). An empty ``path`` (an
    unset shell variable) is an error, not the current directory.
    """
    root = directory("RUN", path)
    if (root / "run.json").is_file():
        return root
    found = [p for pattern in ("*/run.json", "*/*/run.json") for p in root.glob(pattern)]
    if not found:
        raise FileNotFoundError(f"{root} is not a wattprint run directory (no run.json in it)")
    newest = max(found, key=lambda p: p.stat().st_mtime).parent
    print(f"wattprint: {doing} the newest run under {root}: {newest}", file=sys.stderr)
    return newest


def read_run(path: str | Path, doing: str = "reporting") -> RunFiles:
    """The files of the run at ``path`` (``find_run_dir``); errors name the file that is wrong.

    Raises ``FileNotFoundError`` for a missing run.json, ``ValueError`` for one that is not a run's.
    """
    run_dir = find_run_dir(path, doing)
    run = read_run_json(run_dir / "run.json")
    if "totals" not in run:
        raise ValueError(f"{run_dir / 'run.json'} is not a wattprint run.json (no totals)")
    epochs = [current_names(row) for row in _rows(run_dir / "epochs.csv")]
    return RunFiles(run_dir, run, epochs, _rows(run_dir / "devices.csv"))


def text_report(files: RunFiles) -> str:
    """The whole report as text: header, epochs, components, prediction, provenance, warnings."""
    sections = [
        _header(files),
        _epoch_table(files),
        _work(files),
        _components(files),
        _attribution(files),
        _prediction(files),
        _provenance(files),
        _warnings(files),
    ]
    return "\n\n".join(s for s in sections if s) + "\n"


def markdown_statement(files: RunFiles) -> str:
    """A short emissions statement (paragraph + table) for a paper or a model card."""
    run, totals = files.run, files.run["totals"]
    pue = float(run.get("pue") or 1.0)
    energy_j, kwh, co2 = (
        number(totals.get("it_energy_j")),
        number(totals.get("facility_energy_kwh")),
        number(totals.get("co2_g")),
    )
    intensity = number(totals.get("intensity_g_per_kwh"))
    hardware, where, source = hardware_text(run), location_text(run), _intensity_text(run)
    epochs, duration = int(totals.get("epochs") or 0), number(totals.get("duration_s"))
    year = (run.get("intensity") or {}).get("year")
    summary = (
        f"Training run `{run.get('run_id', files.run_dir.name)}` ({files.project}) took "
        f"{duration_text(duration)} over {epochs} epoch(s) on {hardware}. It used "
        f"{_g(kwh)} kWh of electricity (IT energy {_g(energy_j / 3.6e6)} kWh times a PUE of "
        f"{pue:g}). At a grid carbon intensity of {_g(intensity)} gCO2e/kWh "
        f"({where}{f', {year} figure' if year else ''}; source below), this amounts to "
        f"{format_mass(co2, 4)} CO2e."
    )
    measured = {h.get("component") for h in run.get("hardware", [])}
    uncovered = sorted({str(m.get("component")) for m in run.get("missing", [])} - measured)
    rows = [
        ("Hardware", hardware),
        ("Not measured", ", ".join(uncovered) or "nothing"),
        ("Duration", f"{duration_text(duration)} ({epochs} epochs)"),
        ("Energy", f"{_g(kwh)} kWh facility; {_g(energy_j / 3.6e6)} kWh IT (PUE {pue:g})"),
        ("Location", where),
        ("Carbon intensity", f"{_g(intensity)} gCO2e/kWh; {source}"),
        ("Emissions", f"{format_mass(co2, 4)} CO2e"),
        *([("Per unit of work", work)] if (work := _per_unit_text(totals)) else []),
        ("Method", _method_text(run)),
    ]
    table = ["| | |", "|---|---|", *(f"| {k} | {v.replace('|', '/')} |" for k, v in rows)]
    return "### Energy use and carbon emissions\n\n" + summary + "\n\n" + "\n".join(table) + "\n"


# --- sections -------------------------------------------------------------------------------


def _header(files: RunFiles) -> str:
    run = files.run
    lines = [
        f"wattprint report: run {run.get('run_id', files.run_dir.name)} ({files.project}), "
        f"{run.get('status', '?')}",
        f"  {run.get('started_utc', '?')} to {run.get('stopped_utc') or 'still running'}; "
        f"host {run.get('host', '?')}, rank {run.get('rank', 0)}; wattprint "
        f"{run.get('wattprint_version', '?')}, Python {run.get('python', '?')}",
        f"  logs: {files.run_dir}",
    ]
    return "\n".join(lines)


def _epoch_table(files: RunFiles) -> str:
    if not files.epochs:
        return "Epochs: none completed"
    totals = files.run["totals"]
    shown = [c for c in COMPONENTS if c != "other" or totals.get("other_energy_j") is not None]
    names = {"gpu": "GPU Wh", "cpu": "CPU Wh", "dram": "DRAM Wh", "other": "other Wh"}
    head = ("epoch", "time", *(names[c] for c in shown), "IT Wh", "kWh", "g/kWh", "gCO2e")
    rows = [
        (
            row.get("epoch", "?") + ("*" if row.get("partial") == "true" else ""),
            duration_text(number(row.get("duration_s"))),
            *(_wh(row.get(f"{c}_energy_j")) for c in shown),
            _wh(row.get("it_energy_j")),
            _g(number(row.get("facility_energy_kwh"))),
            _g(number(row.get("intensity_g_per_kwh"))),
            _g(number(row.get("co2_g"))),
        )
        for row in files.epochs
    ]
    rows.append(
        (
            "total",
            duration_text(number(totals.get("duration_s"))),
            *(_wh(totals.get(f"{c}_energy_j")) for c in shown),
            _wh(totals.get("it_energy_j")),
            _g(number(totals.get("facility_energy_kwh"))),
            _g(number(totals.get("intensity_g_per_kwh"))),
            _g(number(totals.get("co2_g"))),
        )
    )
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in (head, *rows)]
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    note = "  (kWh: facility energy, after PUE; '-': not measured" + (
        "; *: interrupted epoch)" if any(r.get("partial") == "true" for r in files.epochs) else ")"
    )
    return "Epochs\n" + "\n".join("  " + line for line in lines) + "\n" + note


def _per_unit_text(totals: dict[str, Any]) -> str:
    """``4 J/sample IT, 1.2 gCO2e per 1k samples; ...`` for each unit counted; empty if none."""
    return "; ".join(
        f"{format_energy_per(number(totals.get(f'it_energy_j_per_{u}')), u)} IT, "
        f"{format_co2_per(number(totals.get(f'co2_g_per_{u}')), u)}"
        for u in ("sample", "token")
        if totals.get(f"{u}s") is not None
    )


def _work(files: RunFiles) -> str:
    """The work counted per epoch and the IT energy and gCO2e per sample and per token."""
    units = [u for u in ("sample", "token") if any(row.get(f"{u}s") for row in files.epochs)]
    if not units:
        return "Work: not counted (Tracker.add_work or epoch_end(samples=..., tokens=...))"
    head = ("epoch", *(h for u in units for h in (f"{u}s", f"IT per {u}")))
    rows = [
        (
            row.get("epoch", "?") + ("*" if row.get("partial") == "true" else ""),
            *(
                text
                for u in units
                for text in (
                    _count(row.get(f"{u}s")),
                    format_energy_per(number(row.get(f"it_energy_j_per_{u}")), u),
                )
            ),
        )
        for row in files.epochs
    ]
    totals = files.run["totals"]
    rows.append(
        (
            "total",
            *(
                text
                for u in units
                for text in (
                    _count(totals.get(f"{u}s")),
                    format_energy_per(number(totals.get(f"it_energy_j_per_{u}")), u),
                )
            ),
        )
    )
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in (head, *rows)]
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    emissions = [
        f"  {format_co2_per(number(totals.get(f'co2_g_per_{u}')), u)} (PUE and grid included)"
        for u in units
    ]
    note = "  (per unit: over the epochs that counted it and were measured; '-': not counted)"
    return (
        "Work\n"
        + "\n".join("  " + line for line in lines)
        + "\n"
        + "\n".join(emissions)
        + "\n"
        + note
    )


def _components(files: RunFiles) -> str:
    totals = files.run["totals"]
    energy_j, duration = number(totals.get("it_energy_j")), number(totals.get("duration_s"))
    details = {h.get("device"): h for h in files.run.get("hardware", [])}
    lines = ["Totals per component"]
    for component in COMPONENTS:
        value = totals.get(f"{component}_energy_j")
        names = sorted({r["device"] for r in files.devices if r.get("kind") == component})
        if value is None and component == "other":
            continue  # no whole-node meter: no rest of the node to report
        if value is None:
            lines.append(f"  {component:<5} not measured")
            continue
        share = f"{number(value) / energy_j:.1%}" if energy_j > 0 else "-"
        watts = f"{number(value) / duration:.4g} W avg" if duration > 0 else ""
        devices = "; ".join(_device_text(d, details.get(d, {}), files.devices) for d in names)
        lines.append(f"  {component:<5} {_wh(value)} Wh  {share:>6}  {watts}  {devices}")
    pue = float(files.run.get("pue") or 1.0)
    co2 = number(totals.get("co2_g"))
    lines.append(
        f"  all   {_wh(energy_j)} Wh IT x PUE {pue:g} = "
        f"{_g(number(totals.get('facility_energy_kwh')))} kWh "
        f"-> {format_mass(co2, 4)} CO2e at {_g(number(totals.get('intensity_g_per_kwh')))} g/kWh"
    )
    if math.isfinite(co2) and co2 >= 0:
        lines.append("  That is about:")
        lines += [f"    {e.value:.3g} {e.unit} {e.label}" for e in equivalents(co2)]
    return "\n".join(lines)


def _attribution(files: RunFiles) -> str:
    """Whose energy the run counts and why; per shared device the job's, the host's, the share."""
    attribution = files.run.get("attribution")
    if not isinstance(attribution, dict):
        return ""  # a run from before attribution: the host's, as then
    lines = [f"Attribution: {attribution.get('mode', '?')} ({attribution.get('reason', '?')})"]
    for device, figures in (attribution.get("devices") or {}).items():
        share = number(figures.get("share"))
        lines.append(
            f"  {device:<5} job {_wh(figures.get('job_energy_j'))} Wh of host "
            f"{_wh(figures.get('host_energy_j'))} Wh "
            f"({f'{share:.1%}' if math.isfinite(share) else '-'}, {figures.get('attribution')})"
        )
    return "\n".join(lines)


def _prediction(files: RunFiles) -> str:
    p = files.run.get("prediction")
    if not p:
        return "Prediction: none (pass epochs=N to Tracker to get one)"
    check = p.get("check") or {}
    lines = [
        f"Prediction for {p['epochs']} epochs, made after {p['based_on_epochs']} "
        f"(range: remaining epochs all like the cheapest / costliest so far)"
    ]
    rows = [("", "predicted", "range", "actual", "difference")]
    per_epoch = check and check.get("epochs_run") != check.get("epochs_predicted")
    spread = int(p.get("based_on_epochs") or 0) >= 2
    for name, key, low, high, show in (
        ("time", "duration_s", "duration_low_s", "duration_high_s", duration_text),
        ("energy IT", "it_energy_j", "it_energy_low_j", "it_energy_high_j", _wh_unit),
        ("gCO2e", "co2_g", "co2_low_g", "co2_high_g", lambda g: format_mass(g, 4)),
    ):
        error = check.get(
            {"duration_s": "duration", "it_energy_j": "energy", "co2_g": "co2"}[key] + "_error"
        )
        rows.append(
            (
                name,
                show(number(p.get(key))),
                f"{show(number(p.get(low)))} - {show(number(p.get(high)))}" if spread else "n/a",
                show(number(check.get(key))) if check else "-",
                f"{error:+.1%}{' per epoch' if per_epoch else ''}" if error is not None else "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines += [
        ("  " + "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True))).rstrip()
        for r in rows
    ]
    if not spread:
        lines.append("  a range needs a prediction from 2 or more epochs (epochs_before_pred)")
    if check:
        run_of = (
            f"  actual over {check.get('epochs_run')} of {check.get('epochs_predicted')} epochs"
        )
        in_range = check.get("energy_in_range")
        if in_range is not None:
            run_of += "; energy " + ("within" if in_range else "outside") + " the predicted range"
        lines.append(run_of)
    return "\n".join(lines)


def _provenance(files: RunFiles) -> str:
    run = files.run
    lines = [
        "Provenance",
        f"  measured: {_method_text(run)}",
        f"  intensity: {_intensity_text(run)}",
        f"  location: {location_text(run)}; PUE {float(run.get('pue') or 1.0):g}",
    ]
    missing = [f"{m.get('device')} ({m.get('reason')})" for m in run.get("missing", [])]
    if missing:
        lines.append(f"  not measured directly: {'; '.join(missing)} - the fixes are below")
    return "\n".join(lines)


def _warnings(files: RunFiles) -> str:
    warnings = files.run.get("warnings", [])
    if not warnings:
        return "Warnings: none"
    return f"Warnings ({len(warnings)})\n" + "\n".join(f"  - {w}" for w in warnings)


# --- wording --------------------------------------------------------------------------------


def hardware_text(run: dict[str, Any]) -> str:
    """The run's measured devices in words, e.g. ``2 x NVIDIA H100 80GB HBM3, host DRAM``."""
    counts: dict[str, int] = {}
    for h in run.get("hardware", []):
        label = "host DRAM" if h.get("component") == "dram" else str(h.get("model", "?"))
        if h.get("component") == "cpu" and h.get("device") == "cpu":
            label += " (all CPU packages)"
        counts[label] = counts.get(label, 0) + 1
    return ", ".join(f"{n} x {label}" if n > 1 else label for label, n in counts.items()) or "?"


def _method_text(run: dict[str, Any]) -> str:
    parts = []
    for h in run.get("hardware", []):
        method = str(h.get("method"))
        how = _METHOD_WORDS.get(method, method)
        if method in ("counter", "power", "node-share"):
            how += f" of {h.get('model', '?')}"
        detail = f" ({h['detail']})" if method == "estimate" and h.get("detail") else ""
        minus = ["every other device" if d == EVERY_OTHER_DEVICE else d for d in h.get("minus", [])]
        less = f", less {', '.join(map(str, minus))}" if minus else ""
        if h.get("attribution"):
            detail += f", the job's share ({h['attribution']})"
        parts.append(f"{h.get('device')}: {how}{detail}{less}")
    version = run.get("wattprint_version", "?")
    return f"wattprint {version}; " + ("; ".join(parts) or "no meter")


def _intensity_text(run: dict[str, Any]) -> str:
    i = run.get("intensity") or {}
    year = i.get("year") or "year n/a"
    return f"{i.get('label', '?')}: {i.get('source', '?')} ({year}, {i.get('basis', '?')})"


def location_text(run: dict[str, Any]) -> str:
    """Where the run was priced, e.g. ``DE (Germany)``, or ``not given``."""
    place = run.get("location")
    return f"{place['code']} ({place['name']})" if place else "not given"


def _device_text(device: str, info: dict[str, Any], rows: list[dict[str, str]]) -> str:
    methods = sorted({r["method"] for r in rows if r.get("device") == device})
    return f"{device} {info.get('model', '')} ({'+'.join(methods)})".replace("  ", " ")


# --- numbers --------------------------------------------------------------------------------


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return list(csv.DictReader(handle))
    except (UnicodeDecodeError, csv.Error) as error:
        raise ValueError(f"{path} is not a CSV file as wattprint writes it ({error})") from None


def number(value: object) -> float:
    """A number from JSON or CSV; NaN where it is missing ('' or null)."""
    if value is None or value == "":
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def _count(value: object) -> str:
    """A work count with thousands separated; ``-`` where it was not counted."""
    count = number(value)
    return f"{count:,.0f}" if math.isfinite(count) else "-"


def _g(value: float) -> str:
    return f"{value:.4g}" if math.isfinite(value) else "-"


def _wh(value: object) -> str:
    return _g(number(value) / J_PER_WH)


def _wh_unit(joules: float) -> str:
    return f"{_wh(joules)} Wh" if math.isfinite(joules) else "-"
