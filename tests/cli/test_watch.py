"""``wattprint watch`` on a run another process is writing, and ``wattprint run --live``."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.cli.shell import wattprint

WAIT_S = 60.0  # bound on every wait: a hang fails the test instead of blocking the suite

# A training run with simulated meters (250 W in all) that, after epoch 1, waits for a file.
TRAINING = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from tests.faults.simulated import ConstantPowerMeter
    from tracker import Tracker

    logs, go = sys.argv[1], Path(sys.argv[2])
    meters = [
        ConstantPowerMeter("gpu0", 200.0),
        ConstantPowerMeter("cpu0", 50.0, component="cpu", method="rapl"),
    ]
    with Tracker(
        project="p", log_dir=logs, run_id="r", meters=meters, location="SE", epochs=3,
        interval=0.05, sample_period=0.1, verbose=0,
    ) as tracker:
        for epoch in range(3):
            with tracker.epoch():
                time.sleep(0.2)
            deadline = time.monotonic() + 60
            while epoch == 0 and not go.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
    """
)


def start_training(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    """The training in a subprocess; returns once its run directory holds its run.json."""
    logs = tmp_path / "runs"
    training = subprocess.Popen(
        [sys.executable, "-c", TRAINING, str(logs), str(tmp_path / "go")], env=env
    )
    run_dir = logs / "p" / "r"
    deadline = time.monotonic() + WAIT_S
    while not (run_dir / "run.json").exists():
        assert training.poll() is None and time.monotonic() < deadline, "the run did not start"
        time.sleep(0.05)
    return training, run_dir


def read_line(process: subprocess.Popen[bytes]) -> str:
    """The next line the process writes on stdout, waited for at most WAIT_S."""
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], WAIT_S)
    assert ready, "no line from the watcher"
    return process.stdout.readline().decode()


def watcher(path: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "tracker.cli", "watch", str(path)]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.skipif(sys.platform == "win32", reason="select on pipes")
def test_watch_shows_each_epoch_of_a_run_being_written_and_ends_with_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    training, run_dir = start_training(tmp_path, env)
    watch = watcher(run_dir, env)
    try:
        assert read_line(watch).startswith("epoch 1: ")  # while the run waits in epoch 1
        assert training.poll() is None
        (tmp_path / "go").touch()
        assert training.wait(timeout=WAIT_S) == 0
        out, err = watch.communicate(timeout=WAIT_S)
    finally:
        training.kill()
        watch.kill()
    assert watch.returncode == 0, err
    lines = out.decode().splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == ["epoch 2", "epoch 3"]
    assert all(" s, " in line and " kWh, " in line and "gCO2e" in line for line in lines)
    totals = json.loads((run_dir / "run.json").read_text())["totals"]
    assert lines[2].startswith("run r: finished, 3 epochs, ")
    assert lines[2].endswith(f"{totals['co2_g']:.4g} gCO2e")  # the run's own total, as recorded
    assert len(lines) == 3 and not err


@pytest.mark.skipif(sys.platform == "win32", reason="signals")
def test_watch_ends_when_the_runs_process_is_killed_and_quietly_on_ctrl_c(
    env: dict[str, str], tmp_path: Path
) -> None:
    training, run_dir = start_training(tmp_path, env)
    first, second = watcher(run_dir.parent, env), watcher(run_dir, env)  # a project: newest run
    try:
        assert read_line(first).startswith("epoch 1: ")
        assert read_line(second).startswith("epoch 1: ")
        second.send_signal(signal.SIGINT)
        _, err = second.communicate(timeout=WAIT_S)
        assert second.returncode == 130 and b"Traceback" not in err
        training.kill()  # SIGKILL: run.json says running for ever
        training.wait(timeout=WAIT_S)
        out, err = first.communicate(timeout=WAIT_S)
    finally:
        training.kill()
        first.kill()
        second.kill()
    assert first.returncode == 0
    assert out.decode().splitlines()[-1].startswith("run r: process gone, 1 epochs")
    assert f"watching the newest run under {run_dir.parent}: {run_dir}" in err.decode()


def test_watch_refuses_a_path_that_is_not_a_run(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.txt").write_text("hello")
    for path, message in (
        (tmp_path / "nowhere", "nowhere: no such run directory"),
        (tmp_path / "file.txt", "file.txt: no such run directory"),
        (tmp_path / "empty", "empty is not a wattprint run directory"),
    ):
        result = wattprint("watch", str(path), env=env)
        assert result.returncode == 2
        assert result.stderr.startswith("wattprint: error: ") and message in result.stderr
        assert result.stderr.count("\n") == 1 and not result.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals")
def test_run_live_draws_the_run_in_place_with_the_commands_output_above(
    env: dict[str, str], tmp_path: Path
) -> None:
    logs = tmp_path / "runs"
    command = "import sys, time; print('step one'); time.sleep(0.5); print('oops', file=sys.stderr)"
    args = ["run", "--live", "--log-dir", str(logs), "--location", "SE", "--interval", "0.1"]
    primary, secondary = os.openpty()
    wrapper = subprocess.Popen(
        [sys.executable, "-m", "tracker.cli", *args, "--", sys.executable, "-c", command],
        env=env,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    output = b""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if select.select([primary], [], [], 0.1)[0]:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: every process has closed the terminal
                break
            if not chunk:
                break
            output += chunk
        elif wrapper.poll() is not None:
            break
    os.close(primary)
    assert wrapper.wait(timeout=WAIT_S) == 0
    text = output.decode(errors="replace")
    assert "\x1b[1A\x1b[2K" in text  # redrawn in place (cursor up, erase line)
    assert "step one" in text and "oops" in text  # the command's output, passed through
    (run_dir,) = (logs / "default").iterdir()
    final = text[text.rindex("run " + run_dir.name) :]  # the last frame
    assert "finished" in final and "1 finished" in final and "gCO2e" in final
    assert "power cpu" in text and "energy so far" in text  # frames while the command ran


def test_run_live_without_a_terminal_prints_the_usual_lines(
    env: dict[str, str], tmp_path: Path
) -> None:
    logs = tmp_path / "runs"
    result = wattprint(
        "run", "--live", "--log-dir", str(logs), "--location", "SE", "--",
        sys.executable, "-c", "print('hello')",
        env=env,
    )  # fmt: skip
    assert result.returncode == 0 and result.stdout == "hello\n"
    assert "wattprint epoch 1: " in result.stderr and "\x1b[" not in result.stderr
