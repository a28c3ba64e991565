"""Draw a recorded run: power per device, energy and gCO2e per epoch, gCO2e vs prediction.

matplotlib is an optional extra (``pip install 'wattprint[plot]'``), imported only when a plot is
drawn. The figure is rendered with the Agg canvas directly, never through pyplot, so plotting
neither needs a display nor changes the backend of a program that also uses matplotlib. The file
is written in the format its suffix names (``run.png``, ``run.pdf``, ``run.svg``, ...).
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

from tracker.report.text import RunFiles, number
from tracker.units import parse_utc

__all__ = ["INSTALL_HINT", "plot_format", "plot_run", "require_matplotlib"]

INSTALL_HINT = "plotting needs matplotlib: pip install 'wattprint[plot]'"
J_PER_WH = 3600.0
_COMPONENT_COLOURS = {"gpu": "#2a7ab0", "cpu": "#e08a1e", "dram": "#6a9f3a", "other": "#8c8c8c"}
_SHADES = {  # further devices of a component: darker and lighter shades of its colour
    "gpu": ("#2a7ab0", "#15486b", "#6fb0dc", "#0b2a40"),
    "cpu": ("#e08a1e", "#9c5a0a", "#f2b766", "#5e3604"),
    "dram": ("#6a9f3a", "#426b1f", "#a3cc7c", "#233d0e"),
    "other": ("#8c8c8c", "#5a5a5a", "#b8b8b8", "#333333"),  # a whole-node meter: the node's power
}
_LINESTYLES = ("-", "--", "-.", ":")


def require_matplotlib() -> None:
    """Raise ``ImportError`` with the install command when matplotlib is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError(INSTALL_HINT) from None


def plot_format(path: str | Path) -> str:
    """The file format ``path``'s suffix names (png, pdf, svg, ...); other suffixes: ValueError.

    Every format matplotlib writes itself is accepted; pgf is not, as it is LaTeX code, not a plot.
    """
    require_matplotlib()
    from matplotlib.backend_bases import FigureCanvasBase

    formats = [f for f in FigureCanvasBase.get_supported_filetypes() if f != "pgf"]
    suffix = Path(path).suffix.lower().removeprefix(".")
    if suffix not in formats:
        raise ValueError(
            f"cannot tell which format to draw {os.fspath(path)!r} in: end the file name with "
            f".png, .pdf or .svg (also accepted: {', '.join(sorted(formats))})"
        )
    return suffix


def plot_run(files: RunFiles, path: str | Path) -> Path:
    """Draw ``files`` (``tracker.report.text.read_run``) to ``path`` in the format its suffix names.

    Returns the path; a suffix that names no image format raises ``ValueError`` before drawing.
    """
    file_format = plot_format(path)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9.0, 10.0), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    power, energy, cumulative = figure.subplots(3, 1, height_ratios=(1.3, 1.0, 1.0))
    spans = _epoch_spans(files)
    _draw_power(power, files, spans)
    _draw_energy(energy, files)
    _draw_cumulative(cumulative, files)
    run_id = files.run.get("run_id", files.run_dir.name)
    figure.suptitle(f"wattprint run {run_id} ({files.project})", fontsize=12)
    target = Path(path)
    figure.savefig(target, format=file_format)
    return target


def _draw_power(axes: Any, files: RunFiles, spans: list[tuple[str, float, float]]) -> None:
    series: dict[str, tuple[list[float], list[float]]] = defaultdict(lambda: ([], []))
    samples = files.run_dir / "samples.csv"
    if samples.is_file():
        with samples.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                t, w = number(row.get("elapsed_s")), number(row.get("power_w"))
                if math.isfinite(t) and math.isfinite(w):
                    series[row.get("device", "?")][0].append(t)
                    series[row.get("device", "?")][1].append(w)
    for index, (label, start, end) in enumerate(spans):
        axes.axvspan(start, end, color="0.9" if index % 2 == 0 else "0.95", zorder=0)
        axes.axvline(start, color="0.55", linewidth=0.8, linestyle="--", zorder=1)
        axes.text(
            (start + end) / 2, 1.0, label, transform=axes.get_xaxis_transform(),
            ha="center", va="bottom", fontsize=8, color="0.35",
        )  # fmt: skip
    kinds: dict[str, str] = {}
    for h in files.run.get("hardware", []):
        component = str(h.get("component"))
        kinds[str(h.get("device"))] = component if component in _SHADES else "gpu"
    seen: dict[str, int] = defaultdict(int)
    for device in sorted(series, key=lambda d: (list(_SHADES).index(kinds.get(d, "gpu")), d)):
        times, watts = series[device]
        if times[0] > 0:  # the first point's power covers the time since the run started
            times, watts = [0.0, *times], [watts[0], *watts]
        kind = kinds.get(device, "gpu")
        n = seen[kind]
        seen[kind] += 1
        axes.plot(times, watts, drawstyle="steps-pre", linewidth=1.4, label=device, zorder=2,
                  color=_SHADES[kind][n % 4], linestyle=_LINESTYLES[n // 4 % 4])  # fmt: skip
    if not series:
        axes.text(0.5, 0.5, "no power samples recorded (run shorter than the sample period)",
                  transform=axes.transAxes, ha="center", va="center", color="0.4")  # fmt: skip
    axes.set_title("Power per device (shaded: epochs)", fontsize=10, loc="left", pad=14)
    axes.set_xlabel("seconds since the run started")
    axes.set_ylabel("W")
    axes.set_ylim(bottom=0)
    if series:
        axes.legend(loc="lower right", fontsize=8, ncols=min(len(series), 4))


def _draw_energy(axes: Any, files: RunFiles) -> None:
    epochs = [int(number(r.get("epoch"))) for r in files.epochs]
    bottom = [0.0] * len(epochs)
    for component, colour in _COMPONENT_COLOURS.items():
        values = [number(r.get(f"{component}_energy_j")) / J_PER_WH for r in files.epochs]
        if not any(math.isfinite(v) for v in values):
            continue
        heights = [v if math.isfinite(v) else 0.0 for v in values]
        axes.bar(epochs, heights, bottom=bottom, color=colour, label=f"{component} (IT)", width=0.6)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    axes.set_title("Energy and emissions per epoch", fontsize=10, loc="left")
    axes.set_xlabel("epoch")
    axes.set_ylabel("Wh (IT, before PUE)")
    axes.set_xticks(epochs)
    co2 = axes.twinx()
    co2.plot(epochs, [number(r.get("co2_g")) for r in files.epochs], color="#b03a2e", marker="o",
             linewidth=1.5, label="gCO2e")  # fmt: skip
    co2.set_ylabel("gCO2e", color="#b03a2e")
    highest_g = max([_finite_or_zero(number(r.get("co2_g"))) for r in files.epochs] or [0.0])
    co2.set_ylim(0, highest_g * 1.35 or 1.0)
    axes.set_ylim(0, max(bottom or [0.0]) * 1.35 or 1.0)  # headroom for the legend
    handles = axes.get_legend_handles_labels()
    extra = co2.get_legend_handles_labels()
    if epochs:
        axes.legend(handles[0] + extra[0], handles[1] + extra[1], loc="upper right", fontsize=8,
                    ncols=4)  # fmt: skip


def _draw_cumulative(axes: Any, files: RunFiles) -> None:
    epochs = [0] + [int(number(r.get("epoch"))) for r in files.epochs]
    running = [0.0]
    for row in files.epochs:
        running.append(running[-1] + _finite_or_zero(number(row.get("co2_g"))))
    axes.plot(epochs, running, color="#b03a2e", marker="o", linewidth=1.8, label="actual")
    prediction = files.run.get("prediction")
    if prediction:
        total, done = int(prediction["epochs"]), int(prediction["based_on_epochs"])
        spent = running[min(done, len(running) - 1)]
        axes.plot([0, total], [0.0, number(prediction.get("co2_g"))], color="0.3", linestyle="--",
                  linewidth=1.2, label=f"predicted after {done} epoch(s)")  # fmt: skip
        low, high = number(prediction.get("co2_low_g")), number(prediction.get("co2_high_g"))
        if math.isfinite(low) and math.isfinite(high) and high > low:
            axes.fill_between([done, total], [spent, low], [spent, high], color="0.6", alpha=0.3,
                              linewidth=0, label="predicted range")  # fmt: skip
        axes.set_xlim(0, max(total, epochs[-1]) + 0.2)
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_title("Cumulative emissions against the prediction", fontsize=10, loc="left")
    axes.set_xlabel("epoch")
    axes.set_ylabel("gCO2e")
    axes.set_ylim(bottom=0)
    axes.legend(loc="upper left", fontsize=8)


def _epoch_spans(files: RunFiles) -> list[tuple[str, float, float]]:
    """Each epoch's (label, start, end) in seconds since the run started (samples' clock)."""
    origin = _unix(files.run.get("started_utc"))
    spans = []
    for row in files.epochs:
        start, end = _unix(row.get("start_utc")) - origin, _unix(row.get("end_utc")) - origin
        if math.isfinite(start) and math.isfinite(end):
            spans.append((str(row.get("epoch", "?")), start, end))
    return spans


def _unix(label: object) -> float:
    if not isinstance(label, str) or not label:
        return math.nan
    try:
        return parse_utc(label)
    except ValueError:
        return math.nan


def _finite_or_zero(value: float) -> float:
    return value if math.isfinite(value) else 0.0
