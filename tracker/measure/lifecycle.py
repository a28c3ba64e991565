"""What running trackers do when the process is signalled or forks.

Signals. While a tracker runs, SIGTERM and SIGINT get a handler, installed from the main thread
only (Python allows no other) and only over a handler the program acts on: the default action or
a Python function. A signal the program ignores stays ignored (and stays ignored in the programs
it starts). On a signal, every running tracker of this process closes its open epoch as partial
and writes ``run.json`` with status ``terminated`` (SIGTERM) or ``interrupted`` (SIGINT); then
the signal takes its usual effect: the handler that was there before runs (the user's, or
Python's, which raises ``KeyboardInterrupt``), or, where that was the default action, the
trackers stop and the signal is raised again with the default action, so the process ends as it
would have. A program that lives on (its handler returned) goes on being measured from the cut.
The previous handler is put back when the last tracker stops, unless someone replaced ours.

A signal that arrives while the main thread is inside a tracker hook is held until the hook
returns (``holding_signals``), so no lock, file or snapshot of the hook is entered twice.

Fork. After ``os.fork`` (DataLoader workers) the child forgets the parent's trackers here and gets
the signal handlers back that the program had before them; the trackers themselves check their
owner's pid and do nothing in a child: no sampler, no log writes, no exception.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import math
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, ParamSpec, Protocol, TypeVar

from tracker.records import EpochRecord

if TYPE_CHECKING:
    from tracker.measure.book import EpochBook

logger = logging.getLogger(__name__)

SIGNAL_STATUS: dict[int, str] = {signal.SIGTERM: "terminated", signal.SIGINT: "interrupted"}

P = ParamSpec("P")
R = TypeVar("R")
# Called on a signal with (status, final): final when the process is about to end.
InterruptFn = Callable[[str, bool], None]


def attach(
    owner: object,
    interrupt: InterruptFn,
    resume: Callable[[], None],
    at_exit: Callable[[], None],
) -> None:
    """Register a started tracker, and install the signal handlers if they are not yet in place.

    ``interrupt`` runs on a signal, ``resume`` if the program lives on after it, ``at_exit`` if
    the interpreter exits while the tracker still runs (no ``stop()``).
    """
    _state.watch_forks()
    _state.watch_exit()
    _state.running.append(_Running(id(owner), os.getpid(), interrupt, resume, at_exit))
    _install()


def detach(owner: object) -> None:
    """Forget a stopped tracker; with none left running, put the previous handlers back."""
    for running in [r for r in _state.running if r.key == id(owner)]:
        with contextlib.suppress(ValueError):  # one atomic step: trackers stop on any thread
            _state.running.remove(running)
    if not _state.mine():
        _restore()


def ending_status(exc_type: type[BaseException]) -> str:
    """A run's status when ``exc_type`` ends it: ``interrupted`` for Ctrl-C, else ``failed``."""
    return "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"


def holding_signals(method: Callable[P, R]) -> Callable[P, R]:
    """``method`` (a tracker hook) wrapped so that a signal arriving on the main thread waits.

    The signal is delivered when the outermost such hook returns.
    """

    @functools.wraps(method)
    def hook(*args: P.args, **kwargs: P.kwargs) -> R:
        if threading.current_thread() is not threading.main_thread():
            return method(*args, **kwargs)
        _state.depth += 1
        try:
            return method(*args, **kwargs)
        finally:
            _state.depth -= 1
            if _state.depth == 0 and _state.held:
                _deliver_held()

    return hook


class _RunLog(Protocol):
    def write_run_json(self) -> None: ...


class SignalledRun:
    """What a running tracker does on a signal, after one, and at interpreter exit.

    The three callbacks ``attach`` takes: close the open epoch on a signal, measure on when the
    program lives on, close a run never stopped when the interpreter exits. The ``Tracker``
    mixes this in; the attributes and methods declared here are its own.
    """

    _pid: int
    _hooks: threading.RLock
    _stopped: bool
    _status: str
    _book: EpochBook
    _log: _RunLog | None

    if TYPE_CHECKING:

        def stop(self) -> object:
            """Stop the run (the Tracker's)."""
            ...

        def _close_epoch(self, partial: bool = False) -> EpochRecord: ...

    @holding_signals
    def _close_partial(self) -> None:
        if self._pid != os.getpid():
            return
        with self._hooks:
            if self._book.open is not None:  # unless a signal closed it
                self._close_epoch(partial=True)

    @holding_signals
    def _interrupt(self, status: str, final: bool) -> None:
        """A signal: close the open epoch as partial and record ``status``; stop when ``final``."""
        with self._hooks:
            if self._stopped:
                return
            self._status = status
            if final:
                self.stop()
                return
            if self._book.open is not None:
                self._book.signalled = self._close_epoch(partial=True)
            assert self._log is not None
            self._log.write_run_json()

    def _resume(self) -> None:
        """The signal's handler returned: measure on, the open epoch from the cut."""
        with self._hooks:
            self._lived_on()
            if not self._stopped:
                self._book.resume()

    def _at_exit(self) -> None:
        """Close a run the program never stopped, as the interpreter exits.

        Its status is ``failed`` (or ``interrupted``) when an exception is ending the program,
        else ``finished``.
        """
        ending = getattr(sys, "last_type", None)  # set once an uncaught exception was printed
        if ending is not None and self._status == "running":
            self._status = ending_status(ending)
        self.stop()

    def _lived_on(self) -> None:
        """The program went on after a signal (handled, or its exception caught): running."""
        if not self._stopped and self._status in SIGNAL_STATUS.values():
            self._status = "running"


def inert_record(run_id: str) -> EpochRecord:
    """What ``epoch_end`` returns in a forked child: nothing measured (NaN, never a silent 0)."""
    nan = math.nan
    return EpochRecord(
        run_id=run_id,
        epoch=0,
        start_utc="",
        end_utc="",
        start_s=nan,
        end_s=nan,
        duration_s=nan,
        gpu_energy_j=None,
        cpu_energy_j=None,
        dram_energy_j=None,
        it_energy_j=None,
        pue=nan,
        facility_energy_kwh=None,
        intensity_g_per_kwh=nan,
        co2_g=None,
        gpu_avg_w=None,
        gpu_peak_w=None,
        methods="not measured: forked child of the tracking process",
    )


# -- internals -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Running:
    key: int
    pid: int
    interrupt: InterruptFn
    resume: Callable[[], None]
    at_exit: Callable[[], None]


@dataclass
class _State:
    """Process-wide: running trackers, the handlers ours replaced, signals held by a hook."""

    running: list[_Running] = field(default_factory=list)
    previous: dict[int, Callable[[int, FrameType | None], object] | int] = field(
        default_factory=dict
    )
    held: list[int] = field(default_factory=list)
    dispatching: set[int] = field(default_factory=set)
    depth: int = 0
    fork_hook: bool = False
    exit_hook: bool = False

    def mine(self) -> list[_Running]:
        """The running trackers that belong to this process, oldest first."""
        pid = os.getpid()
        return [r for r in self.running if r.pid == pid]

    def watch_forks(self) -> None:
        if not self.fork_hook and hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self.forget_parent)
            self.fork_hook = True

    def watch_exit(self) -> None:
        if not self.exit_hook:
            atexit.register(_stop_at_exit)
            self.exit_hook = True

    def forget_parent(self) -> None:
        """In a forked child: drop the parent's trackers and held signals; put its handlers back.

        A child runs no tracker, so it gets the handlers it would have had without one. A Python
        handler would also make it racy to stop: a SIGTERM landing just before a blocking C call
        (a pool worker waiting for its task queue) sets a flag nothing reads, and the worker hangs.
        """
        self.running.clear()
        self.held.clear()
        self.dispatching.clear()
        self.depth = 0
        _restore()


_state = _State()


def _stop_at_exit() -> None:
    """The interpreter exits: trackers never stopped write their final run.json now."""
    for running in reversed(_state.mine()):
        try:
            running.at_exit()
        except Exception:  # exiting regardless; the rows are on disk already
            logger.exception("wattprint: closing a run at interpreter exit failed")


def _install() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # signal.signal works on the main thread only; the tracker runs without it
    for signum in SIGNAL_STATUS:
        current = signal.getsignal(signum)
        if current is _on_signal or current in (signal.SIG_IGN, None):
            continue  # ours already, ignored on purpose, or set outside Python: left alone
        _state.previous[signum] = current
        signal.signal(signum, _on_signal)


def _restore() -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # ours stays, chaining to the previous handler; harmless with no tracker
    for signum, previous in _state.previous.items():
        if signal.getsignal(signum) is _on_signal:
            signal.signal(signum, previous)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _state.depth > 0:  # the main thread is inside a tracker hook: after it returns
        if signum not in _state.held:
            _state.held.append(signum)
        return
    _dispatch(signum, frame)


def _deliver_held() -> None:
    while _state.held:
        _dispatch(_state.held.pop(0), None)


def _dispatch(signum: int, frame: FrameType | None) -> None:
    """Close every tracker's epoch, then give the signal its usual effect."""
    previous = _state.previous.get(signum, signal.SIG_DFL)
    if signum in _state.dispatching:  # our handler reached again through another one's chain
        previous = signal.default_int_handler if signum == signal.SIGINT else signal.SIG_DFL
        _state.dispatching.discard(signum)
    final = previous == signal.SIG_DFL
    status = SIGNAL_STATUS.get(signum, "interrupted")
    for running in reversed(_state.mine()):
        try:
            running.interrupt(status, final)
        except Exception:  # a broken tracker must not change what the signal does
            logger.exception("wattprint: closing a run on signal %d failed", signum)
    if final:
        _restore()
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)  # the default action: the process ends here
        return
    if callable(previous):
        _state.dispatching.add(signum)
        try:
            previous(signum, frame)
        finally:
            _state.dispatching.discard(signum)
    for running in _state.mine():
        running.resume()
