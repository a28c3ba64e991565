"""``wattprint locations [QUERY]``: list or search the bundled grid intensities."""

from __future__ import annotations

import argparse

from tracker.carbon.locations import format_locations, resolve, search
from tracker.cli import Subparsers


def register(subparsers: Subparsers) -> None:
    """Add ``wattprint locations [QUERY]``."""
    parser = subparsers.add_parser("locations", help="list or search the bundled grid intensities")
    parser.add_argument("query", nargs="?", help="code, name or part of one")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Print the locations that match (all without a query); none raises, naming the nearest."""
    found = search(args.query)
    if not found:
        resolve(args.query)  # raises, naming the closest matches
        found = search(args.query)
    print(format_locations(found))
    return 0
