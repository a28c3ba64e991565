"""The ``wattprint`` entry point: one parser of every subcommand, and one line per user error.

User errors (a bad argument, an unknown location) print one ``wattprint: error:`` line and exit 2;
a traceback means a bug in wattprint.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tracker.cli import compare, devices, estimate, locations, merge, report, run, watch


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wattprint`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        code: int = args.handler(args)
    except BrokenPipeError:  # the reader left (``| head``): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (ValueError, OSError) as error:
        print(f"wattprint: error: {error}", file=sys.stderr)
        return 2
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wattprint",
        description="Measure and estimate the energy and carbon of machine-learning runs.",
    )
    subparsers = parser.add_subparsers(title="commands")
    for command in (devices, run, locations, estimate, report, merge, compare, watch):
        command.register(subparsers)
    return parser
