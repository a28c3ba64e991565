"""``wattprint merge DIR... --out DIR``: the runs of one job as one run directory.

The merging (each host's CPU and DRAM counted once) is ``tracker.distributed.merge.merge_runs``.
"""

from __future__ import annotations

import argparse

from tracker.cli import Subparsers
from tracker.distributed.merge import merge_runs
from tracker.units import figure


def register(subparsers: Subparsers) -> None:
    """Add ``wattprint merge DIR... --out DIR [--same-job]``."""
    parser = subparsers.add_parser(
        "merge",
        help="combine the runs of one job (e.g. one per SLURM node) into one run directory",
        description="Sum the runs of one job epoch by epoch, counting each host's CPU and DRAM "
        "once, and write the result as a run directory that load_run and report read.",
    )
    parser.add_argument("runs", nargs="+", metavar="DIR", help="run directories to combine")
    parser.add_argument("--out", required=True, metavar="DIR", help="new directory to write")
    parser.add_argument(
        "--same-job",
        action="store_true",
        help="merge even though the runs share no SLURM job id or run id",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Merge the runs into ``--out``; print the merged totals (kWh facility, gCO2e)."""
    summary = merge_runs(args.runs, args.out, same_job=args.same_job)
    print(
        f"wattprint merge: {len(args.runs)} runs, {summary.epochs} epochs, "
        f"{figure(summary.facility_energy_kwh)} kWh, {figure(summary.co2_g)} gCO2e; "
        f"written to {args.out}"
    )
    return 0
