"""The ``wattprint`` command: devices, run, locations, estimate, report, merge.

User errors (a bad argument, an unknown location) print one ``wattprint: error:`` line and exit 2;
a traceback means a bug in wattprint.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

from backends.base import COMPONENTS, Component, Found, MeterInfo, Missing
from backends.discover import RAPL_READERS, discover


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``wattprint`` console script."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        code: int = args.handler(args)
    except (ValueError, FileNotFoundError) as error:
        print(f"wattprint: error: {error}", file=sys.stderr)
        return 2
    return code


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wattprint",
        description="Measure and estimate the energy and carbon of machine-learning runs.",
    )
    sub = parser.add_subparsers(title="commands")

    devices = sub.add_parser("devices", help="what can be measured here, how, and what is missing")
    devices.add_argument("--json", action="store_true", help="machine-readable output")
    devices.add_argument("--rapl-reader", choices=RAPL_READERS, default="powercap")
    devices.set_defaults(handler=_devices)

    run = sub.add_parser(
        "run",
        help="run a command under the tracker, as one epoch",
        usage="wattprint run [options] -- CMD [ARGS...]",
    )
    run.add_argument("--project", default="default")
    run.add_argument("--log-dir", default="wattprint-runs")
    run.add_argument("--location", help="country, US-CA style state or aws:/gcp:/azure: region")
    run.add_argument(
        "--intensity", help="constant g CO2e/kWh (500, 500g/kWh, 0.5kg/kWh) or a time-series CSV"
    )
    run.add_argument("--pue", type=float, help="power usage effectiveness (>= 1.0)")
    run.add_argument("--interval", type=float, default=0.5, help="sampler period in seconds")
    run.add_argument("--gpus", help="comma-separated GPU indices (>= 0) or UUIDs")
    run.add_argument("--quiet", action="store_true", help="no per-epoch and summary lines")
    run.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    run.set_defaults(handler=_run)

    locations = sub.add_parser("locations", help="list or search the bundled grid intensities")
    locations.add_argument("query", nargs="?", help="code, name or part of one")
    locations.set_defaults(handler=_locations)

    from tracker.estimation.forms import add_estimate_subcommand

    add_estimate_subcommand(sub)
    from tracker.report.text import register as add_report_subcommand

    add_report_subcommand(sub)
    from tracker.distributed.merge import add_merge_subcommand

    add_merge_subcommand(sub)
    return parser


def _devices(args: argparse.Namespace) -> int:
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


def _run(args: argparse.Namespace) -> int:
    from tracker.tracker import Tracker

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise ValueError(
            "wattprint run needs a command after --, e.g. wattprint run -- python train.py"
        )
    if shutil.which(command[0]) is None:  # say so before a run directory is made
        raise ValueError(f"cannot start {command[0]!r}: no such executable file")
    gpus = _gpus(args.gpus) if args.gpus is not None else None
    tracker = Tracker(
        project=args.project,
        log_dir=args.log_dir,
        location=args.location,
        intensity=args.intensity,
        pue=args.pue,
        interval=args.interval,
        gpus=gpus,
        verbose=0 if args.quiet else 1,
    )
    tracker.record_command(command)  # run.json says what ran from its first write on
    with tracker:
        tracker.epoch_start()
        try:
            child = subprocess.Popen(command)
        except OSError as error:
            raise ValueError(f"cannot start {command[0]!r}: {error}") from error

        def forward(signum: int, _frame: FrameType | None) -> None:
            if signum != signal.SIGINT or not _terminal_reached_child():
                child.send_signal(signum)

        forwarded = (signal.SIGTERM, signal.SIGINT)
        previous = {signum: signal.signal(signum, forward) for signum in forwarded}
        try:
            code = child.wait()  # a signal ends the command, and the command ends the epoch
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        status = code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell says
        tracker.record_command(command, exit_code=status)  # non-zero: the run is "failed"
        tracker.epoch_end()
    return status


def _gpus(text: str) -> list[int | str]:
    """``--gpus 0,1`` or ``--gpus GPU-8f2c...``: visible-GPU indices (>= 0) and UUIDs, in order."""
    entries = [entry.strip() for entry in text.split(",")]
    for entry in entries:
        if not entry or re.fullmatch(r"-\d+", entry):
            raise ValueError(
                f"--gpus {text!r}: {entry!r} is neither a GPU index >= 0 nor a GPU- UUID; give "
                "them comma-separated, e.g. --gpus 0,1"
            )
    return [int(entry) if entry.isdecimal() else entry for entry in entries]


def _terminal_reached_child() -> bool:
    """Whether a Ctrl-C reached the command too: we (and so it) are the terminal's foreground.

    The terminal signals its whole foreground process group; forwarding that SIGINT again would
    interrupt the command twice (e.g. inside its own clean-up).
    """
    if sys.platform == "win32":
        return False
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            if stream is not None and stream.isatty():
                return os.tcgetpgrp(stream.fileno()) == os.getpgrp()
        except (OSError, ValueError):  # closed or detached stream: try the next
            continue
    return False


def _locations(args: argparse.Namespace) -> int:
    from tracker.carbon.locations import format_locations, resolve, search

    found = search(args.query)
    if not found:
        resolve(args.query)  # raises, naming the closest matches
        found = search(args.query)
    print(format_locations(found))
    return 0
