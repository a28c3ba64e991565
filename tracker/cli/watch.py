"""``wattprint watch RUN_DIR`` and ``wattprint run --live``: a run followed live from its files.

The following and the view are ``tracker.report.live``. ``watch`` draws on stdout and ends when the
run does (or on Ctrl-C, quietly). ``run --live`` draws on stderr while the command runs; the
command's terminal output is passed through above the view (through a pseudo-terminal, so the
command still sees a terminal), never drawn over.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.file_proxy import FileProxy

from tracker.cli import Subparsers
from tracker.distributed.process_group import host_name
from tracker.output.console import say
from tracker.report.live import follow, run_dir_of


def register(subparsers: Subparsers) -> None:
    """Add ``wattprint watch RUN_DIR``."""
    parser = subparsers.add_parser(
        "watch",
        help="follow a running run live: power, energy, gCO2e, epoch, prediction",
        description="Follow a run from its files while it is written (from another terminal, or "
        "another node on a shared file system) until it ends. On a terminal the view is redrawn "
        "in place; otherwise one line per finished epoch and one at the end.",
    )
    parser.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        help="a run directory (or a project directory: its newest run)",
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Follow the run until it ends; 0, or 130 after Ctrl-C."""
    run_dir = run_dir_of(args.run_dir)
    try:
        follow(run_dir, Console(), host=host_name())
    except KeyboardInterrupt:
        return 130
    return 0


@contextlib.contextmanager
def live_run(run_dir: Path, enabled: bool) -> Iterator[dict[str, Any]]:
    """Show the run at ``run_dir`` live on stderr while the block runs, when stderr is a terminal.

    Yields the ``subprocess.Popen`` keyword arguments that pass the command's terminal output
    through above the view (empty when there is no view). The view ends after the block, with
    the run's final state.
    """
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield {}
        return
    stop = threading.Event()
    viewer = threading.Thread(
        target=_show, args=(run_dir, console, stop), name="wattprint-live", daemon=True
    )
    viewer.start()
    try:
        with _relay(console, redirect_stdout=sys.stdout.isatty()) as popen_kwargs:
            yield popen_kwargs
    finally:
        stop.set()
        viewer.join()


def _show(run_dir: Path, console: Console, stop: threading.Event) -> None:
    """``follow`` on the viewer thread; a failure ends the view, never the command."""
    try:
        follow(run_dir, console, stop=stop)
    except Exception as error:
        say(f"wattprint: the live view stopped: {error!r}")


@contextlib.contextmanager
def _relay(console: Console, redirect_stdout: bool) -> Iterator[dict[str, Any]]:
    """A pseudo-terminal (a pipe where there is none) whose output is printed above the view.

    Yields the Popen arguments that connect the command's stderr (and stdout, when ours is a
    terminal too) to it; on leaving, waits until everything the command wrote has been printed.
    """
    try:
        import pty

        reader, writer = pty.openpty()
    except (ImportError, OSError):  # no pseudo-terminals (Windows): a pipe
        reader, writer = os.pipe()
    copier = threading.Thread(
        target=_copy, args=(reader, FileProxy(console, sys.stderr)), name="wattprint-relay"
    )
    copier.daemon = True
    copier.start()
    popen_kwargs: dict[str, Any] = {"stderr": writer}
    if redirect_stdout:
        popen_kwargs["stdout"] = writer
    try:
        yield popen_kwargs
    finally:
        os.close(writer)  # the command has ended and closed its copies: the copy ends
        copier.join(timeout=5)  # unless a process the command left running holds it open


def _copy(reader: int, out: FileProxy) -> None:
    """Copy what arrives on ``reader`` to ``out``, whole lines at a time, until it ends."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    try:
        while chunk := os.read(reader, 65536):
            out.write(decoder.decode(chunk).replace("\r\n", "\n"))
    except OSError:  # EIO: a pseudo-terminal whose other end every process has closed
        pass
    finally:
        out.write(decoder.decode(b"", final=True))
        out.flush()
        os.close(reader)
