"""IPython magics: ``%%wattprint`` measures a notebook cell, ``%wattprint`` shows the last one.

Loaded by ``%load_ext tracker`` (``tracker.load_ipython_extension``); this module imports IPython
(the ``notebook`` extra), so ``import tracker`` never does. Each ``%%wattprint`` cell is a run of
its own with one epoch: ``<log_dir>/<project>/<run_id>`` holds its files as for any run. A cell
that raises still records its epoch (marked partial, the run ``failed``) and the error goes on to
IPython as if there were no magic.
"""

from __future__ import annotations

import ast
import html
import math
import shlex
from dataclasses import dataclass
from typing import Any

from IPython.core import magic_arguments
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.display import display

from backends.base import COMPONENTS
from tracker.output.console import epoch_line
from tracker.records import EpochRecord, RunSummary
from tracker.tracker import Tracker
from tracker.units import figure, format_number

__all__ = ["CellMeasurement", "WattprintMagics", "load_ipython_extension"]


@dataclass(frozen=True, slots=True)
class CellMeasurement:
    """One measured cell: its epoch and its run's summary; shown as text or an HTML table."""

    record: EpochRecord
    summary: RunSummary

    def text(self) -> str:
        """The cell's epoch line, where its logs are, and the run's warnings."""
        warnings = "".join(f"\nwarning: {message}" for message in self.summary.warnings)
        return f"{epoch_line(self.record)}\nlogs in {self.summary.run_dir}{warnings}"

    def rows(self) -> list[tuple[str, str]]:
        """(quantity, value with unit) pairs: the table's rows; ``n/a`` where not measured.

        The run's warnings are rows too: the tracker runs quietly here (``verbose=0``).
        """
        record, summary = self.record, self.summary
        rows = [("duration", f"{format_number(record.duration_s, 4)} s")]
        for component in COMPONENTS:
            energy_j = record.component_energy_j(component)
            if energy_j is not None:
                rows.append((f"{component} energy (IT)", f"{format_number(energy_j, 4)} J"))
        rows += [
            ("facility energy", f"{figure(record.facility_energy_kwh)} kWh (PUE {record.pue:g})"),
            ("emissions", f"{figure(record.co2_g)} gCO2e"),
            ("intensity", f"{figure(record.intensity_g_per_kwh, '.0f')} gCO2e/kWh"),
            ("intensity source", summary.intensity_source),
            ("measured by", record.methods),
        ]
        rows += [("not measured", gap) for gap in summary.missing]
        rows.append(("logs", summary.run_dir))
        rows += [("warning", message) for message in summary.warnings]
        return rows

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.text())

    def __repr__(self) -> str:
        """The text summary (``text``), as a terminal shows it."""
        return self.text()

    def _repr_html_(self) -> str:
        flag = " (partial: the cell raised)" if self.record.partial else ""
        body = "".join(
            f"<tr><th style='text-align:left'>{html.escape(name)}</th>"
            f"<td style='text-align:left'>{html.escape(value)}</td></tr>"
            for name, value in self.rows()
        )
        return f"<table><caption>wattprint: this cell{flag}</caption>{body}</table>"


@magics_class
class WattprintMagics(Magics):
    """``%%wattprint [options]`` measures the cell; ``%wattprint`` shows the last measurement."""

    def __init__(self, shell: InteractiveShell) -> None:
        super().__init__(shell)
        self.last: CellMeasurement | None = None

    @magic_arguments.magic_arguments()
    @magic_arguments.argument("--project", default="notebook", help="project name (directory)")
    @magic_arguments.argument("--log-dir", default="wattprint-runs", help="where runs are written")
    @magic_arguments.argument(
        "--location", help="country, US-CA style state or aws:/gcp:/azure: region"
    )
    @magic_arguments.argument(
        "--intensity", help="constant g CO2e/kWh (500, 500g/kWh, 0.5kg/kWh) or a time-series CSV"
    )
    @magic_arguments.argument("--pue", type=float, help="power usage effectiveness (>= 1.0)")
    @cell_magic("wattprint")  # type: ignore[arg-type]  # IPython types it as a union
    def wattprint_cell(self, line: str, cell: str) -> object:
        """Run the cell as one epoch of a new run; show its energy and emissions.

        Returns the value of the cell's last expression, as the cell would without the magic.
        """
        __tracebackhide__ = True
        try:  # quoted as in a shell (IPython's own splitting keeps the quotes)
            words = shlex.split(line)
        except ValueError as error:
            raise UsageError(f"%%wattprint: {error} in {line.strip()!r}") from None
        args = self.wattprint_cell.parser.parse_args(words)
        if args.pue is not None and not math.isfinite(args.pue):
            raise UsageError(f"--pue must be a finite number >= 1.0, got {args.pue}")
        try:
            tracker = Tracker(
                project=args.project,
                log_dir=args.log_dir,
                location=args.location,
                intensity=args.intensity,
                pue=args.pue,
                verbose=0,
            )
        except ValueError as error:  # a bad option: one line, the cell does not run
            raise UsageError(f"%%wattprint: {error}") from None
        try:
            with tracker, tracker.epoch():
                return self._run(cell)
        finally:
            if tracker.epochs:
                self.last = CellMeasurement(tracker.epochs[-1], tracker.summary)
                display(self.last)

    @line_magic("wattprint")  # type: ignore[arg-type]
    def wattprint_line(self, line: str) -> CellMeasurement | None:
        """The last ``%%wattprint`` cell's measurement (None, with a hint, before the first)."""
        if line.strip():
            raise UsageError(
                "%wattprint takes no options (it shows the last measurement); "
                f"measure a cell with %%wattprint {line.strip()}"
            )
        if self.last is None:
            print("wattprint: no cell measured yet; put %%wattprint on a cell's first line")
        return self.last

    def _run(self, cell: str) -> object:
        """Execute the cell in the user's namespace; the value of a final expression is returned.

        IPython's own syntax (``!ls``, ``%time``) is translated first, as in any cell.
        """
        __tracebackhide__ = True  # tracebacks show the cell's lines, not the magic's
        assert self.shell is not None
        source = self.shell.transform_cell(cell)
        filename = self.shell.compile.cache(source, self.shell.execution_count, raw_code=cell)
        module = ast.parse(source, filename)
        last = module.body.pop() if module.body and isinstance(module.body[-1], ast.Expr) else None
        namespace = self.shell.user_ns
        exec(compile(module, filename, "exec"), namespace)
        if last is None:
            return None
        expression = ast.Expression(last.value)
        return eval(compile(expression, filename, "eval"), namespace)


def load_ipython_extension(ipython: InteractiveShell) -> None:
    """Register the magics (``%load_ext tracker`` calls this)."""
    ipython.register_magics(WattprintMagics(ipython))
