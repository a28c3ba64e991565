"""``wattprint run -- CMD``: run a command under the tracker, as one epoch.

Signals to wattprint are forwarded to the command, which ends the epoch by exiting; wattprint exits
with the command's status, as a shell would report it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
from types import FrameType

from backends.attribution import ATTRIBUTIONS
from tracker.cli import Subparsers, watch
from tracker.exporters.base import Exporter
from tracker.tracker import Tracker


def register(subparsers: Subparsers) -> None:
    """Add ``wattprint run [options] -- CMD [ARGS...]``."""
    parser = subparsers.add_parser(
        "run",
        help="run a command under the tracker, as one epoch",
        usage="wattprint run [options] -- CMD [ARGS...]",
    )
    parser.add_argument("--project", default="default")
    parser.add_argument("--log-dir", default="wattprint-runs")
    parser.add_argument("--location", help="country, US-CA style state or aws:/gcp:/azure: region")
    parser.add_argument(
        "--intensity", help="constant g CO2e/kWh (500, 500g/kWh, 0.5kg/kWh) or a time-series CSV"
    )
    parser.add_argument("--pue", type=float, help="power usage effectiveness (>= 1.0)")
    parser.add_argument("--interval", type=float, default=0.5, help="sampler period in seconds")
    parser.add_argument("--gpus", help="comma-separated GPU indices (>= 0) or UUIDs")
    parser.add_argument(
        "--attribution",
        choices=ATTRIBUTIONS,
        help="host: the whole host's CPU and DRAM; process: the command tree's share; auto "
        "(default, or env WATTPRINT_ATTRIBUTION): process where the job holds part of the machine",
    )
    parser.add_argument("--quiet", action="store_true", help="no per-epoch and summary lines")
    parser.add_argument(
        "--live",
        action="store_true",
        help="show power, energy, gCO2e and the prediction live on stderr (a terminal)",
    )
    parser.add_argument(
        "--prometheus",
        metavar="[ADDR:]PORT",
        help="serve Prometheus metrics on http://ADDR:PORT/metrics while the command runs "
        "(ADDR defaults to 127.0.0.1; needs wattprint[prometheus])",
    )
    parser.add_argument(
        "--pushgateway",
        metavar="URL",
        help="push Prometheus metrics to this Pushgateway (host:port or URL) when the command "
        "ends (needs wattprint[prometheus])",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Measure the command as one epoch; return its exit status (128 + N if killed by signal N)."""
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
    exporters = _exporters(args.prometheus, args.pushgateway)
    tracker = Tracker(
        project=args.project,
        log_dir=args.log_dir,
        location=args.location,
        intensity=args.intensity,
        pue=args.pue,
        interval=args.interval,
        gpus=gpus,
        verbose=0 if args.quiet else 1,
        exporters=exporters,
        attribution=args.attribution,
    )
    tracker.record_command(command)  # run.json says what ran from its first write on
    with watch.live_run(tracker.run_dir, args.live) as output, tracker:
        tracker.epoch_start()
        try:
            child = subprocess.Popen(command, **output)
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


def _exporters(serve: str | None, push: str | None) -> list[Exporter]:
    """``--prometheus [ADDR:]PORT`` and ``--pushgateway URL`` as exporters (none without them).

    A missing ``prometheus_client`` is a ``ValueError`` naming the extra, said before the run.
    """
    from tracker.exporters.prometheus import Prometheus

    exporters: list[Exporter] = []
    try:
        if serve is not None:
            addr, _, port = serve.rpartition(":")
            if not (port.isascii() and port.isdecimal()) or int(port) == 0:
                raise ValueError(  # port 0 would serve on a port no scraper could be told
                    f"--prometheus {serve!r}: give a port from 1 to 65535 (9101) or an address "
                    "and port (0.0.0.0:9101, [::1]:9101)"
                )
            addr = addr.removeprefix("[").removesuffix("]") or "127.0.0.1"
            exporters.append(Prometheus(int(port), addr))
        if push is not None:
            exporters.append(Prometheus(pushgateway=push))
    except ImportError as error:
        raise ValueError(str(error)) from error
    return exporters


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
