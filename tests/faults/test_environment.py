"""The environment misbehaves: unwritable logs, a full disk, two trackers, fork, clock jumps.

The log files are failed at ``tracker.output.logs``' file boundary (``FillingDisk``) or by a file
standing where the log directory should be; the run must go on, warn once, and lose no row.
"""

from __future__ import annotations

import io
import json
import logging
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path

import pytest

from tests.fake_nvml import SimulatedGPU, constant_power, install_fake_nvml
from tests.faults.processes import Child, epochs_of, run_json
from tests.faults.simulated import ConstantPowerMeter, FillingDisk
from tracker import EpochRecord, Tracker, load_run
from tracker.output import logs

BOARD_W = 200.0


def tracker_for(
    name: str, log_dir: Path, *, verbose: int = 0, sample_period: float = 1.0
) -> Tracker:
    """A tracker over one simulated 200 W board, sampling every 50 ms."""
    return Tracker(
        name,
        log_dir,
        meters=[ConstantPowerMeter("gpu0", BOARD_W)],
        components=["gpu"],
        interval=0.05,
        intensity=300.0,
        verbose=verbose,
        sample_period=sample_period,
    )


def gpu_tracker(name: str, log_dir: Path) -> Tracker:
    """A tracker over the GPUs NVML shows."""
    return Tracker(name, log_dir, components=["gpu"], interval=0.05, intensity=300.0, verbose=0)


def write_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The write warnings a quiet (verbose=0) tracker logged, at INFO."""
    return [r.getMessage() for r in caplog.records if "cannot write the logs" in r.getMessage()]


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> FillingDisk:
    """The disk under ``tracker.output.logs``, which a test can fill and empty."""
    filling = FillingDisk()
    monkeypatch.setattr(logs, "open", filling.open, raising=False)
    return filling


def test_an_unwritable_log_directory_costs_nothing_and_is_written_once_it_can_be(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tracker")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the log directory should go")
    with tracker_for("ro", blocker / "runs") as tracker:
        for _ in range(2):
            with tracker.epoch():
                time.sleep(0.02)
        assert not tracker.run_dir.exists()
        blocker.unlink()
        with tracker.epoch():
            time.sleep(0.02)
    assert len(write_warnings(caplog)) == 1
    epochs = epochs_of(tracker.run_dir)
    assert list(epochs["epoch"]) == [1, 2, 3] and not epochs["partial"].any()
    assert list(load_run(tracker.run_dir, devices=True)["epoch"]) == [1, 2, 3]
    assert run_json(tracker.run_dir)["status"] == "finished"


def test_a_disk_filling_mid_run_loses_no_row_and_leaves_no_half_line(
    disk: FillingDisk, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tracker")
    with tracker_for("full", tmp_path, sample_period=0.05) as tracker:
        with tracker.epoch():
            time.sleep(0.1)
        disk.full = True
        for _ in range(2):
            with tracker.epoch():
                time.sleep(0.1)
        assert disk.refused > 0
        assert list(epochs_of(tracker.run_dir)["epoch"]) == [1]  # whole while the disk is full
        disk.full = False
        with tracker.epoch():
            time.sleep(0.1)
    assert len(write_warnings(caplog)) == 1
    epochs = epochs_of(tracker.run_dir)
    assert list(epochs["epoch"]) == [1, 2, 3, 4]
    assert epochs["gpu_energy_j"].to_numpy() == pytest.approx(
        [r.gpu_energy_j for r in tracker.epochs]
    )
    assert list(load_run(tracker.run_dir, devices=True)["epoch"]) == [1, 2, 3, 4]
    samples = load_run(tracker.run_dir, samples=True)
    assert (samples["device"] == "gpu0").all() and samples["power_w"].notna().all()
    assert run_json(tracker.run_dir)["totals"]["epochs"] == 4


def test_rows_held_while_the_disk_was_full_are_written_at_stop_once_it_has_room(
    disk: FillingDisk, tmp_path: Path
) -> None:
    with tracker_for("late", tmp_path) as tracker:
        with tracker.epoch():
            time.sleep(0.02)
        disk.full = True
        with tracker.epoch():
            time.sleep(0.02)
        disk.full = False  # room again, but no epoch follows: stop() must write what waits
    assert list(epochs_of(tracker.run_dir)["epoch"]) == [1, 2]
    assert list(load_run(tracker.run_dir, devices=True)["epoch"]) == [1, 2]


class TrainingError(RuntimeError):
    pass


def test_an_exception_with_the_disk_full_at_exit_still_reaches_the_caller_unchanged(
    disk: FillingDisk, tmp_path: Path
) -> None:
    error = TrainingError("out of memory")
    with pytest.raises(TrainingError) as raised, tracker_for("oom", tmp_path) as tracker:
        tracker.epoch_start()
        disk.full = True
        raise error
    assert raised.value is error
    assert tracker.epochs[0].partial and tracker.summary.epochs == 1


def test_two_trackers_in_one_process_measure_independently_and_share_nvml_safely(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gpu = SimulatedGPU(power_w=constant_power(300.0))
    nvml = install_fake_nvml(monkeypatch, [gpu])
    outer = gpu_tracker("outer", tmp_path).start()
    outer.epoch_start()
    time.sleep(0.1)
    with gpu_tracker("inner", tmp_path) as inner, inner.epoch():
        time.sleep(0.2)
    time.sleep(0.1)  # the inner tracker has stopped: the outer one must still read the GPU
    outer.epoch_end()
    outer.stop()
    for tracker in (outer, inner):
        (record,) = tracker.epochs
        (board,) = record.devices
        assert board.method == "counter"
        assert board.energy_j == pytest.approx(gpu.energy_j(record.start_s, record.end_s), rel=1e-3)
        assert list(epochs_of(tracker.run_dir)["epoch"]) == [1]
    assert outer.epochs[0].duration_s > inner.epochs[0].duration_s
    assert not nvml.initialized  # every init matched by a shutdown


FORKING_TRAINING = textwrap.dedent(
    """
    import json, multiprocessing, os, signal, sys, threading, time
    from tests.faults.simulated import ConstantPowerMeter
    from tracker import Tracker

    def users_handler(signum, frame):
        sys.exit(1)

    signal.signal(signal.SIGTERM, users_handler)  # the program's own, before any tracker
    tracker = Tracker("fork", sys.argv[1], run_id="r", meters=[ConstantPowerMeter()],
                      components=["gpu"], intensity=300.0, interval=0.05, verbose=0)

    def own_handlers():  # what the program had before the tracker, not the tracker's
        return (signal.getsignal(signal.SIGTERM) is users_handler
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler)

    def worker(item):  # a DataLoader-style worker touching the parent's tracker
        with tracker.epoch():
            pass
        return [t.name for t in threading.enumerate()], own_handlers()

    with tracker:
        with tracker.epoch():
            time.sleep(0.1)
        tracker.epoch_start()
        pool = multiprocessing.get_context("fork").Pool(2)
        workers = pool.map(worker, range(4))
        pool.close()  # workers leave on their own: terminate()'s SIGTERM would race the user's
        pool.join()   # handler in a worker blocked on the pool's queue lock, and hang it
        pid = os.fork()
        if pid == 0:  # a forked child that leaves through the with block, as sys.exit does
            handlers = own_handlers()
            record = tracker.epoch_end()
            tracker.epoch_start()
            tracker.stop()
            threads = [t.name for t in threading.enumerate()]
            print(json.dumps({"epoch": record.epoch, "methods": record.methods,
                              "threads": threads, "workers": workers,
                              "own_handlers": handlers}), flush=True)
            sys.exit(0)
        tracked_handlers = not own_handlers()
        _, status = os.waitpid(pid, 0)
        print(f"child exit {os.waitstatus_to_exitcode(status)}", flush=True)
        time.sleep(0.05)
        tracker.epoch_end()
    print(f"parent done, tracked handlers {tracked_handlers}", flush=True)
    """
)


def test_forked_children_start_no_sampler_write_no_log_and_raise_nothing(
    tmp_path: Path,
) -> None:
    child = Child(["-c", FORKING_TRAINING, str(tmp_path / "logs")], tmp_path)
    status, stdout, stderr = child.finish()
    assert status == 0, stderr
    report, exit_line, done = stdout.splitlines()
    assert (exit_line, done) == ("child exit 0", "parent done, tracked handlers True")
    seen = json.loads(report)
    assert seen["epoch"] == 0 and "not measured: forked child" in seen["methods"]
    assert "wattprint-sampler" not in seen["threads"]
    assert all("wattprint-sampler" not in names for names, _ in seen["workers"])
    # Children run the program's own handlers: a Python one left from the tracker would make
    # Pool.terminate() hang now and then (a SIGTERM just before a worker blocks is never acted on).
    assert seen["own_handlers"] and all(own for _, own in seen["workers"])
    run_dir = tmp_path / "logs" / "fork" / "r"
    epochs = epochs_of(run_dir)
    assert list(epochs["epoch"]) == [1, 2] and not epochs["partial"].any()
    assert list(load_run(run_dir, devices=True)["epoch"]) == [1, 2]
    assert run_json(run_dir)["status"] == "finished" and run_json(run_dir)["totals"]["epochs"] == 2


def test_wall_clock_jumps_change_no_duration_no_energy_and_no_label_gap(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real_time = time.time
    step_s = [0.0]
    monkeypatch.setattr(time, "time", lambda: real_time() + step_s[0])
    with tracker_for("ntp", tmp_path) as tracker:
        before_s = time.monotonic()
        tracker.epoch_start()
        time.sleep(0.1)
        step_s[0] = 3600.0  # NTP steps the clock an hour ahead...
        time.sleep(0.1)
        step_s[0] = -7200.0  # ...then two hours back
        time.sleep(0.1)
        record = tracker.epoch_end()
        after_s = time.monotonic()
    assert 0.3 <= record.duration_s <= after_s - before_s
    assert record.gpu_energy_j == pytest.approx(BOARD_W * record.duration_s, rel=1e-6, abs=0.05)
    assert label_gap_s(record) == pytest.approx(record.duration_s, abs=0.002)


def label_gap_s(record: EpochRecord) -> float:
    start = datetime.fromisoformat(record.start_utc.replace("Z", "+00:00"))
    end = datetime.fromisoformat(record.end_utc.replace("Z", "+00:00"))
    return (end - start).total_seconds()


class BrokenPipe(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def closed_stream() -> io.StringIO:
    stream = io.StringIO()
    stream.close()
    return stream


@pytest.mark.parametrize("stderr", [closed_stream(), BrokenPipe()], ids=["closed", "broken"])
def test_a_dead_stderr_costs_the_printed_lines_not_the_training(
    stderr: io.StringIO, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(sys, "stderr", stderr)
    with tracker_for("loud", tmp_path, verbose=1) as tracker:
        for _ in range(2):
            with tracker.epoch():
                pass
    assert [r.epoch for r in tracker.epochs] == [1, 2]
