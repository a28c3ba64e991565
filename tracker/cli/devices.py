"""``wattprint devices``: what can be measured here, how, and what is missing with its fix."""

from __future__ import annotations

import argparse
import dataclasses
import json

from backends.base import COMPONENTS, Component, Found, MeterInfo, Missing
from backends.discover import RAPL_READERS, discover
from tracker.cli import Subparsers


def register(subparsers: Subparsers) -> None:
    """Add ``wattprint devices [--json] [--rapl-reader READER]``."""
    parser = subparsers.add_parser(
        "devices", help="what can be measured here, how, and what is missing"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--rapl-reader", choices=RAPL_READERS, default="powercap")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """One state per component: measured (on which devices), estimated (and why), not measured."""
    found = discover(rapl_reader=args.rapl_reader)
    coverage = [_Coverage.of(component, found) for component in COMPONENTS]
    if args.json:
        document = {
            "components": {c.component: c.summary() for c in coverage},
            "meters": [dataclasses.asdict(m.info) for m in found.meters],
            "missing": [dataclasses.asdict(m) for m in found.missing],
        }
        print(json.dumps(document, indent=2))
        return 0
    for c in coverage:
        print(f"{c.component:<5} {c.headline()}")
        for info in c.measured + c.estimated:
            detail = f" - {info.detail}" if info.detail else ""
            print(f"        {info.device}: {info.method}, {info.model}{detail}")
        for missing in c.missing:
            print(f"        {c.gap(missing)}")
            if missing.fix:
                print(f"        fix: {missing.fix}")
    return 0


@dataclasses.dataclass(frozen=True, slots=True)
class _Coverage:
    """How one component is covered here: the meters that measure it, estimate it, and the gaps."""

    component: Component
    measured: list[MeterInfo]
    estimated: list[MeterInfo]
    missing: list[Missing]

    @classmethod
    def of(cls, component: Component, found: Found) -> _Coverage:
        """Sort what discovery found for ``component`` by how it is covered."""
        infos = [m.info for m in found.meters if m.info.component == component]
        return cls(
            component,
            [i for i in infos if i.method != "estimate"],
            [i for i in infos if i.method == "estimate"],
            [m for m in found.missing if m.component == component],
        )

    @property
    def state(self) -> str:
        """measured, partly measured (some devices not), estimated, or not measured."""
        if self.measured:
            return "partly measured" if self.missing else "measured"
        return "estimated" if self.estimated else "not measured"

    def headline(self) -> str:
        """The component's state with its devices, as one line."""
        measured = ", ".join(f"{i.device} ({i.method})" for i in self.measured)
        gaps = ", ".join(m.device for m in self.missing)
        return {
            "measured": f"measured on {measured}",
            "partly measured": f"measured on {measured}; {gaps} not measured",
            "estimated": f"estimated ({', '.join(i.device for i in self.estimated)})",
            "not measured": "not measured",
        }[self.state]

    def gap(self, missing: Missing) -> str:
        """What a ``Missing`` entry means for this component, as one line."""
        return {
            "partly measured": f"{missing.device} not measured: {missing.reason}",
            "estimated": f"why: {missing.device} cannot be measured directly: {missing.reason}",
        }.get(self.state, f"{missing.device}: {missing.reason}")

    def summary(self) -> dict[str, object]:
        """The state and the devices in it, for ``--json`` (reasons and fixes are in missing)."""
        gaps = [m.device for m in self.missing]
        parts = {
            "measured": [i.device for i in self.measured],
            "estimated": [i.device for i in self.estimated],
            "not_measured": gaps if self.state != "estimated" else [],
            "why": [m.reason for m in self.missing] if self.state == "estimated" else [],
        }
        return {"state": self.state} | {key: value for key, value in parts.items() if value}
