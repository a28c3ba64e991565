"""``wattprint compare RUN [RUN ...]``: recorded runs side by side, and an energy-regression gate.

The comparison (IT energy per sample, token, epoch or run against a baseline, with the epochs'
noise) is ``tracker.report.compare``. ``--fail-above PCT`` exits with status 1 when a run exceeds
the baseline by more than PCT percent, for CI; a run without figures in the chosen unit is an
error (status 2).
"""

from __future__ import annotations

import argparse
import json

from tracker.cli import Subparsers
from tracker.report.compare import PER, compare_runs, json_document, markdown, text


def register(subparsers: Subparsers) -> None:
    """Add ``wattprint compare RUN [RUN ...] [--baseline RUN] [--per UNIT] [--fail-above PCT]``."""
    parser = subparsers.add_parser(
        "compare",
        help="recorded runs side by side against a baseline; --fail-above gates CI on energy",
        description="Compare recorded runs: hardware, location, energy, gCO2e and IT energy per "
        "sample, token and epoch, each run's ratio to the baseline and whether it exceeds the "
        "runs' epoch-to-epoch noise.",
    )
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="run directories (or project directories: newest run)",
    )
    parser.add_argument(
        "--baseline", metavar="RUN", help="the run to compare with (default: first)"
    )
    parser.add_argument(
        "--per",
        choices=(*PER, "auto"),
        default="auto",
        help="the unit of the verdict: IT energy per sample, token, epoch or run (default auto: "
        "samples where every run counted them, else tokens, else epochs)",
    )
    parser.add_argument(
        "--fail-above",
        type=float,
        metavar="PCT",
        help="exit with status 1 when a run exceeds the baseline by more than PCT percent",
    )
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--markdown", action="store_true", help="Markdown, for a pull request")
    output.add_argument("--json", action="store_true", help="JSON, for scripts")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Print the comparison; 1 when ``--fail-above`` is exceeded, else 0."""
    comparison = compare_runs(
        args.runs, baseline=args.baseline, per=args.per, fail_above=args.fail_above
    )
    if args.json:
        print(json.dumps(json_document(comparison), indent=2, allow_nan=False))
    elif args.markdown:
        print(markdown(comparison), end="")
    else:
        print(text(comparison), end="")
    return 1 if comparison.failed else 0
