"""A training loop to signal, kill and fork: ``python -m tests.faults.training LOG_DIR [options]``.

Each tracker (``run0``, ``run1``, ...) measures one simulated 200 W board. Inside every epoch the
loop prints ``epoch N started`` (flushed), so a test can strike mid-epoch; ``finished`` means the
loop ran to its end. ``--handler`` sets, before the trackers start, what the program itself does
on ``--signal``: nothing (``none``: the default), ``exit`` (a handler that reports how many
partial epochs ``run0`` has on disk, then ``sys.exit(7)``), ``return`` (a handler that asks the
loop to stop after this epoch and returns) or ``ignore`` (SIG_IGN). Epochs are steps of 20 ms;
epoch ``--struck`` lasts ``--struck-s`` (10 s), so a signal sent when it starts lands inside it
however slow the machine, and a handler that asks to stop ends it at the next step.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType

from tests.faults.simulated import ConstantPowerMeter
from tracker import Tracker

HANDLER_EXIT_CODE = 7
STEP_S = 0.02


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    signum = signal.SIGINT if args.signal == "INT" else signal.SIGTERM
    stop_requested: list[int] = []

    def exit_handler(number: int, _frame: FrameType | None) -> None:
        print(f"user handler saw {_partial_rows(args.log_dir / 'run0')} partial", flush=True)
        sys.exit(HANDLER_EXIT_CODE)

    def return_handler(number: int, _frame: FrameType | None) -> None:
        print("user handler returned", flush=True)
        stop_requested.append(number)

    if args.handler == "exit":
        signal.signal(signum, exit_handler)
    elif args.handler == "return":
        signal.signal(signum, return_handler)
    elif args.handler == "ignore":
        signal.signal(signum, signal.SIG_IGN)
    trackers = [
        Tracker(
            f"run{i}",
            args.log_dir,
            run_id="r",
            meters=[ConstantPowerMeter("gpu0", 200.0)],
            components=["gpu"],
            intensity=300.0,
            interval=0.05,
            verbose=0,
        )
        for i in range(args.trackers)
    ]

    def train(epoch: int) -> None:
        print(f"epoch {epoch} started", flush=True)
        seconds = args.struck_s if epoch == args.struck else args.epoch_s
        end_s = time.monotonic() + seconds
        while not stop_requested and time.monotonic() < end_s:
            time.sleep(min(STEP_S, seconds))

    if args.style == "bare":
        _bare(trackers, args.epochs, train, stop_requested)
    else:
        _with_blocks(trackers, args.epochs, train, stop_requested)
    print("finished", flush=True)
    return 0


def _bare(
    trackers: list[Tracker], epochs: int, train: Callable[[int], None], stop: list[int]
) -> None:
    """start/epoch_start/epoch_end/stop, no context manager: only the tracker can close up."""
    for tracker in trackers:
        tracker.start()
    for epoch in range(1, epochs + 1):
        for tracker in trackers:
            tracker.epoch_start()
        train(epoch)
        for tracker in trackers:
            tracker.epoch_end()
        if stop:
            break
    for tracker in trackers:
        tracker.stop()


def _with_blocks(
    trackers: list[Tracker], epochs: int, train: Callable[[int], None], stop: list[int]
) -> None:
    with contextlib.ExitStack() as running:
        for tracker in trackers:
            running.enter_context(tracker)
        for epoch in range(1, epochs + 1):
            with contextlib.ExitStack() as open_epochs:
                for tracker in trackers:
                    open_epochs.enter_context(tracker.epoch())
                train(epoch)
            if stop:
                break


def _partial_rows(run_dir: Path) -> int:
    with open(run_dir / "r" / "epochs.csv", newline="") as epochs:
        return sum(row["partial"] == "true" for row in csv.DictReader(epochs))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log_dir", type=Path)
    parser.add_argument("--signal", choices=("TERM", "INT"), default="TERM")
    parser.add_argument("--handler", choices=("none", "exit", "return", "ignore"), default="none")
    parser.add_argument("--style", choices=("with", "bare"), default="with")
    parser.add_argument("--trackers", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--epoch-s", type=float, default=0.1)
    parser.add_argument("--struck", type=int, default=0, help="the epoch a test will signal")
    parser.add_argument("--struck-s", type=float, default=10.0)
    return parser


if __name__ == "__main__":
    sys.exit(main())
