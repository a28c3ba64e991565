"""Process death: SIGTERM, SIGINT and kill -9 mid-epoch, and exceptions out of the loop.

The signalled programs run in real subprocesses (``tests.faults.training``); each is struck after
it prints ``epoch N started``, i.e. inside epoch N. Every run measures a simulated 200 W board, so
each epoch's energy must be exactly 200 W x its duration, the partial one included; one more
kill -9 strikes a training that reads a simulated two-socket RAPL tree.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from tests.fake_powercap import build_powercap
from tests.faults.processes import Child, child_env, epochs_of, run_json
from tests.faults.simulated import ConstantPowerMeter
from tests.faults.training import HANDLER_EXIT_CODE
from tracker import Tracker, load_run

BOARD_W = 200.0
READ_LAG_J = 0.05  # a boundary is stamped a few µs before the meter is read: 250 µs at 200 W


def strike(log_dir: Path, epoch: int, signum: int, *options: str) -> tuple[int, str, str]:
    """Run the training, send ``signum`` as epoch ``epoch`` starts, return how it ended."""
    child = Child.training(log_dir, "--struck", str(epoch), *options)
    child.wait_for(f"epoch {epoch} started")
    child.send(signum)
    return child.finish()


def run_dir(log_dir: Path, tracker: int = 0) -> Path:
    return log_dir / f"run{tracker}" / "r"


def assert_cut_at_epoch(epochs: pd.DataFrame, partial_epoch: int) -> None:
    """Epochs 1..N-1 whole, epoch N partial, every one priced at exactly 200 W x duration."""
    assert list(epochs["epoch"]) == list(range(1, partial_epoch + 1))
    assert list(epochs["partial"]) == [False] * (partial_epoch - 1) + [True]
    assert_priced_by_duration(epochs)


def assert_priced_by_duration(epochs: pd.DataFrame) -> None:
    assert epochs["gpu_energy_j"].to_numpy() == pytest.approx(
        BOARD_W * epochs["duration_s"].to_numpy(), rel=1e-6, abs=READ_LAG_J
    )


def test_sigterm_mid_epoch_closes_it_as_partial_then_ends_the_process_by_sigterm(
    tmp_path: Path,
) -> None:
    status, stdout, _ = strike(tmp_path / "logs", 3, signal.SIGTERM)
    assert status == -signal.SIGTERM  # the default action still ends the process
    assert "finished" not in stdout
    assert_cut_at_epoch(epochs_of(run_dir(tmp_path / "logs")), partial_epoch=3)
    run = run_json(run_dir(tmp_path / "logs"))
    assert run["status"] == "terminated" and run["totals"]["epochs"] == 3
    assert run["stopped_utc"] is not None and run["whole_run_energy_j"]["gpu0"] > 0


def test_sigterm_runs_the_programs_own_handler_after_the_partial_epoch_is_on_disk(
    tmp_path: Path,
) -> None:
    status, stdout, _ = strike(tmp_path / "logs", 2, signal.SIGTERM, "--handler", "exit")
    assert status == HANDLER_EXIT_CODE  # the user's handler ran and chose the exit code
    assert "user handler saw 1 partial" in stdout  # it ran after the partial row was written
    assert_cut_at_epoch(epochs_of(run_dir(tmp_path / "logs")), partial_epoch=2)
    assert run_json(run_dir(tmp_path / "logs"))["status"] == "terminated"


def test_sigint_without_context_managers_closes_the_epoch_then_raises_keyboard_interrupt(
    tmp_path: Path,
) -> None:
    options = ("--signal", "INT", "--style", "bare")
    status, _, stderr = strike(tmp_path / "logs", 3, signal.SIGINT, *options)
    # Python's usual end on Ctrl-C: the traceback, then death by SIGINT (since 3.8).
    assert status == -signal.SIGINT and stderr.rstrip().endswith("KeyboardInterrupt")
    assert_cut_at_epoch(epochs_of(run_dir(tmp_path / "logs")), partial_epoch=3)
    assert run_json(run_dir(tmp_path / "logs"))["status"] == "interrupted"


def test_sigint_through_epoch_and_tracker_blocks_closes_the_epoch_exactly_once(
    tmp_path: Path,
) -> None:
    status, _, stderr = strike(tmp_path / "logs", 2, signal.SIGINT, "--signal", "INT")
    # Python's usual end on Ctrl-C: the traceback, then death by SIGINT (since 3.8).
    assert status == -signal.SIGINT and stderr.rstrip().endswith("KeyboardInterrupt")
    assert "AssertionError" not in stderr and "ValueError" not in stderr
    assert_cut_at_epoch(epochs_of(run_dir(tmp_path / "logs")), partial_epoch=2)
    assert run_json(run_dir(tmp_path / "logs"))["status"] == "interrupted"


def test_a_handler_that_returns_keeps_the_run_going_and_loses_no_time(tmp_path: Path) -> None:
    status, stdout, stderr = strike(tmp_path / "logs", 2, signal.SIGTERM, "--handler", "return")
    assert status == 0 and stdout.endswith("user handler returned\nfinished"), stderr
    epochs = epochs_of(run_dir(tmp_path / "logs"))
    # The signal cut epoch 2; the rest of the program's epoch 2 is its second part.
    assert list(epochs["epoch"]) == [1, 2, 2]
    assert list(epochs["partial"]) == [False, True, True]
    assert epochs["end_utc"][1] == epochs["start_utc"][2]  # no gap: no time goes unmeasured
    assert_priced_by_duration(epochs)
    assert run_json(run_dir(tmp_path / "logs"))["status"] == "finished"


def test_an_ignored_signal_stays_ignored_and_cuts_no_epoch(tmp_path: Path) -> None:
    child = Child.training(tmp_path / "logs", "--handler", "ignore", "--epochs", "3")
    child.wait_for("epoch 2 started")
    child.send(signal.SIGTERM)
    status, stdout, _ = child.finish()
    assert status == 0 and stdout.endswith("finished")
    epochs = epochs_of(run_dir(tmp_path / "logs"))
    assert list(epochs["epoch"]) == [1, 2, 3] and not epochs["partial"].any()


def test_sigterm_closes_every_tracker_in_the_process(tmp_path: Path) -> None:
    status, _, _ = strike(tmp_path / "logs", 2, signal.SIGTERM, "--trackers", "2")
    assert status == -signal.SIGTERM
    for tracker in (0, 1):
        assert_cut_at_epoch(epochs_of(run_dir(tmp_path / "logs", tracker)), partial_epoch=2)
        assert run_json(run_dir(tmp_path / "logs", tracker))["status"] == "terminated"


def test_kill_9_mid_epoch_leaves_every_completed_epoch_and_a_whole_run_json(
    tmp_path: Path,
) -> None:
    child = Child.training(tmp_path / "logs", "--epoch-s", "0.01")
    child.wait_for("epoch 25 started")
    child.send(signal.SIGKILL)
    status, _, _ = child.finish()
    assert status == -signal.SIGKILL
    epochs = epochs_of(run_dir(tmp_path / "logs"))
    assert len(epochs) >= 24
    assert list(epochs["epoch"]) == list(range(1, len(epochs) + 1))
    assert epochs["gpu_energy_j"].notna().all() and not epochs["partial"].any()
    devices = load_run(run_dir(tmp_path / "logs"), devices=True)
    assert set(devices["epoch"]) >= set(range(1, 25))
    assert run_json(run_dir(tmp_path / "logs"))["status"] == "running"  # whole, if not final


RAPL_TRAINING = textwrap.dedent(
    """
    import sys, time
    from tracker import Tracker
    with Tracker("crash", sys.argv[1], intensity=300.0, interval=0.05, verbose=0) as t:
        for epoch in range(1000):
            with t.epoch():
                time.sleep(0.05)
            print(f"done {epoch + 1}", flush=True)
    """
)


def test_kill_9_mid_run_leaves_every_completed_epoch_parseable(tmp_path: Path) -> None:
    build_powercap(tmp_path / "powercap", sockets=2)
    env = child_env(tmp_path) | {"WATTPRINT_POWERCAP_ROOT": str(tmp_path / "powercap")}
    logs = tmp_path / "runs"
    child = subprocess.Popen(
        [sys.executable, "-c", RAPL_TRAINING, str(logs)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    completed = 0
    deadline = time.monotonic() + 60
    while completed < 4 and time.monotonic() < deadline:
        completed = int(child.stdout.readline().split()[1])
    time.sleep(0.02)  # into the next epoch
    child.send_signal(signal.SIGKILL)
    child.wait()
    (crashed,) = (logs / "crash").iterdir()
    epochs = load_run(crashed)
    assert len(epochs) >= completed
    assert list(epochs["epoch"]) == list(range(1, len(epochs) + 1))
    assert epochs["cpu_energy_j"].notna().all()
    devices = load_run(crashed, devices=True)
    assert set(devices["epoch"]) == set(epochs["epoch"])
    json.loads((crashed / "run.json").read_text())  # whole, never half-written


SIGNAL_INSIDE_A_HOOK = textwrap.dedent(
    """
    import os, signal, sys
    from tests.faults.simulated import ConstantPowerMeter
    from tracker import Tracker

    class SignallingMeter(ConstantPowerMeter):
        armed = False
        def read(self):
            if self.armed:  # read on the training thread, inside epoch_end, under its locks
                self.armed = False
                os.kill(os.getpid(), signal.SIGTERM)
            return super().read()

    meter = SignallingMeter()
    with Tracker("hook", sys.argv[1], run_id="r", meters=[meter], components=["gpu"],
                 intensity=300.0, verbose=0) as tracker:
        tracker.epoch_start()
        meter.armed = True
        tracker.epoch_end()
        print("survived", flush=True)
    """
)


def test_a_signal_arriving_inside_a_hook_is_held_until_the_hook_returns(tmp_path: Path) -> None:
    child = Child(["-c", SIGNAL_INSIDE_A_HOOK, str(tmp_path / "logs")], tmp_path)
    status, stdout, stderr = child.finish(timeout_s=10)  # handled inside the hook: deadlock
    assert status == -signal.SIGTERM, stderr
    assert "survived" not in stdout
    epochs = epochs_of(tmp_path / "logs" / "hook" / "r")
    assert list(epochs["partial"]) == [False]  # the epoch closed whole, then the signal acted
    assert run_json(tmp_path / "logs" / "hook" / "r")["status"] == "terminated"


class TrainingError(RuntimeError):
    pass


def test_an_exception_out_of_the_loop_propagates_unchanged_and_the_logs_are_closed(
    tmp_path: Path,
) -> None:
    error = TrainingError("loss is NaN")
    with pytest.raises(TrainingError) as raised:  # noqa: SIM117 - the with under test
        with Tracker(
            "boom", tmp_path, meters=[ConstantPowerMeter()], intensity=1.0, verbose=0
        ) as t:
            with t.epoch():
                pass
            t.epoch_start()
            raise error
    assert raised.value is error and raised.value.__context__ is None
    assert raised.traceback[-1].name.startswith("test_")  # raised where the user raised it
    epochs = epochs_of(t.run_dir)
    assert list(epochs["partial"]) == [False, True]
    assert run_json(t.run_dir)["status"] == "failed"
    still_open = [f.path for f in psutil.Process().open_files() if str(t.run_dir) in f.path]
    assert still_open == []
    assert not any(thread.name == "wattprint-sampler" for thread in threading.enumerate())


def test_handlers_are_installed_only_while_a_tracker_runs_and_then_put_back(
    tmp_path: Path,
) -> None:
    def users(signum: int, frame: object) -> None:
        raise AssertionError("not signalled in this test")

    previous = signal.signal(signal.SIGTERM, users)
    try:
        first = Tracker("a", tmp_path, meters=[ConstantPowerMeter()], intensity=1.0, verbose=0)
        second = Tracker("b", tmp_path, meters=[ConstantPowerMeter()], intensity=1.0, verbose=0)
        assert signal.getsignal(signal.SIGTERM) is users
        first.start()
        second.start()
        assert signal.getsignal(signal.SIGTERM) is not users
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        first.stop()
        assert signal.getsignal(signal.SIGTERM) is not users  # second still runs
        second.stop()
        assert signal.getsignal(signal.SIGTERM) is users
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_tracker_off_the_main_thread_leaves_signal_handlers_alone(tmp_path: Path) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    seen: list[object] = []

    def train() -> None:
        tracker = Tracker("t", tmp_path, meters=[ConstantPowerMeter()], intensity=1.0, verbose=0)
        with tracker, tracker.epoch():
            seen.append(signal.getsignal(signal.SIGTERM))
        seen.append(tracker.epochs[0].it_energy_j)

    thread = threading.Thread(target=train)
    thread.start()
    thread.join(timeout=30)
    assert seen[0] is before[signal.SIGTERM] and isinstance(seen[1], float)
    assert {s: signal.getsignal(s) for s in before} == before
