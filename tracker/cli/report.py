"""``wattprint report RUN_DIR``: a recorded run at a glance, an emissions statement, a plot.

The text report and the Markdown statement come from ``tracker.report.text``, the plot from
``tracker.report.plot`` (needs matplotlib).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tracker.cli import Subparsers
from tracker.report.plot import plot_format, plot_run
from tracker.report.text import markdown_statement, read_run, text_report


def register(subparsers: Subparsers) -> None:
    """Add ``wattprint report RUN_DIR [--plot FILE.png|.pdf|.svg] [--markdown [FILE]]``."""
    parser = subparsers.add_parser(
        "report",
        help="a recorded run at a glance; --plot draws it, --markdown writes a statement",
        description="Report a recorded run: per-epoch table, totals, prediction, provenance.",
    )
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="a run directory (or a directory of runs)"
    )
    parser.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw power, energy and emissions to FILE, in the format its suffix names "
        "(.png, .pdf, .svg, ...)",
    )
    parser.add_argument(
        "--markdown",
        nargs="?",
        const="-",
        metavar="FILE",
        help="write an emissions statement in Markdown (to FILE, or instead of the report)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Print the report (or the statement), then write the files asked for."""
    if args.plot:
        try:
            plot_format(args.plot)  # fail before printing anything
        except (ImportError, ValueError) as error:
            raise ValueError(f"--plot: {error}") from None
    files = read_run(args.run_dir)
    if args.markdown == "-":
        print(markdown_statement(files), end="")
    else:
        print(text_report(files), end="")
    if args.markdown not in (None, "-"):
        Path(args.markdown).write_text(markdown_statement(files), encoding="utf-8")
        print(f"statement written to {args.markdown}", file=sys.stderr)
    if args.plot:
        plot_run(files, args.plot)
        print(f"plot written to {args.plot}", file=sys.stderr)
    return 0
