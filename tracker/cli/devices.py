"""``wattprint devices``: what can be measured here, how, and what is missing with its fix.

Each component's state is ``tracker.measure.coverage``'s, as a run's first lines give it, and
each meter says what its figure covers (its scope; ``minus``: the devices taken out of it);
discovery's notes (a Jetson rail that feeds CPU and GPU together) follow.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json

from backends.base import COMPONENTS, EVERY_OTHER_DEVICE, Missing
from backends.discover import RAPL_READERS, discover
from tracker.cli import Subparsers
from tracker.measure.coverage import Coverage, coverage

NO_NODE_METER = (
    "no whole-node meter here (HPE Cray EX cray/pm_counters); the rest of the node (fans, NIC, "
    "storage, regulator loss) is not measured and other_energy_j stays empty"
)


def register(subparsers: Subparsers) -> None:
    """Add ``wattprint devices [--json] [--rapl-reader READER]``."""
    parser = subparsers.add_parser(
        "devices", help="what can be measured here, how, and what is missing"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--rapl-reader", choices=RAPL_READERS, default="powercap")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """One state per component: measured (on which devices), estimated (and why), not measured.

    Each meter's line gives its method and detail (for a GPU, what its figure covers: ``scope=``);
    the discovery notes (a GPU counted on another's meter, a counter dropped) follow the list.
    """
    found = discover(rapl_reader=args.rapl_reader)
    for meter in found.meters:  # only their descriptions are needed: give NVML back now
        with contextlib.suppress(Exception):
            meter.close()
    states = coverage(found.meters, found.missing, COMPONENTS)
    if args.json:
        document = {
            "components": {c.component: _summary(c) for c in states} | _no_other(states),
            "meters": [dataclasses.asdict(m.info) for m in found.meters],
            "missing": [dataclasses.asdict(m) for m in found.missing],
            "notes": found.notes,
        }
        print(json.dumps(document, indent=2))
        return 0
    for c in states:
        print(f"{c.component:<5} {_headline(c)}")
        for info in c.meters:
            detail = f" - {info.detail}" if info.detail else ""
            scope = f"; covers {info.scope}{_less(info.minus)}" if info.scope else ""
            print(f"        {info.device}: {info.method}, {info.model}{detail}{scope}")
        for missing in c.missing:
            print(f"        {_gap(c, missing)}")
            if missing.fix:
                print(f"        fix: {missing.fix}")
    if _no_other(states):
        print(f"other not measured: {NO_NODE_METER}")
    for note in found.notes:  # what a figure covers, where a meter's scope is unusual
        print(f"note  {note}")
    return 0


def _less(minus: tuple[str, ...]) -> str:
    """``, less cpu0`` for the devices a meter's figure is reduced by (``MeterInfo.minus``)."""
    names = ["every other device measured" if n == EVERY_OTHER_DEVICE else n for n in minus]
    return f", less {', '.join(names)}" if names else ""


def _no_other(states: list[Coverage]) -> dict[str, object]:
    """``other``'s entry where coverage left it out: no whole-node meter exists here."""
    if any(c.component == "other" for c in states):
        return {}
    return {"other": {"state": "not measured", "why": [NO_NODE_METER]}}


def _headline(c: Coverage) -> str:
    """The component's state with its devices, as one line."""
    measured = ", ".join(f"{i.device} ({i.method})" for i in c.meters)
    gaps = ", ".join(m.device for m in c.missing)
    return {
        "measured": f"measured on {measured}",
        "partial": f"measured on {measured}; {gaps} not measured",
        "estimated": f"estimated ({', '.join(i.device for i in c.meters)})",
        "not measured": "not measured",
    }[c.state]


def _gap(c: Coverage, missing: Missing) -> str:
    """What a ``Missing`` entry means for the component, as one line."""
    return {
        "partial": f"{missing.device} not measured: {missing.reason}",
        "estimated": f"why: {missing.device} cannot be measured directly: {missing.reason}",
    }.get(c.state, f"{missing.device}: {missing.reason}")


def _summary(c: Coverage) -> dict[str, object]:
    """The state and the devices in it, for ``--json`` (reasons and fixes are in missing)."""
    estimated = c.state == "estimated"
    parts = {
        "measured": [] if estimated else [i.device for i in c.meters],
        "estimated": [i.device for i in c.meters] if estimated else [],
        "not_measured": [] if estimated else [m.device for m in c.missing],
        "why": [m.reason for m in c.missing] if estimated else [],
    }
    state = "partly measured" if c.state == "partial" else c.state
    return {"state": state} | {key: value for key, value in parts.items() if value}
