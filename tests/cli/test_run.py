"""``wattprint run``: a command measured as one epoch, its exit status, and signals sent to it."""

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
from tests.fake_nvml import install_no_nvml
from tracker import load_run
from tracker.cli.main import main


def test_run_measures_the_command_as_one_epoch_and_passes_its_exit_code(
    env: dict[str, str], tmp_path: Path
) -> None:
    logs = tmp_path / "runs"
    result = wattprint(
        "run", "--project", "cmd", "--log-dir", str(logs), "--location", "SE", "--",
        sys.executable, "-c", "import time, sys; time.sleep(0.3); sys.exit(3)",
        env=env,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    assert "wattprint epoch 1" in result.stderr and "gCO2e" in result.stderr
    (run_dir,) = (logs / "cmd").iterdir()
    epochs = load_run(run_dir)
    assert len(epochs) == 1 and epochs["duration_s"].iloc[0] >= 0.3
    assert epochs["methods"].iloc[0] == "gpu=none;cpu=rapl;dram=rapl"


def test_run_attributes_the_command_trees_share_when_asked(
    env: dict[str, str], tmp_path: Path
) -> None:
    logs = tmp_path / "runs"
    command = [sys.executable, "-c", "import time; time.sleep(0.3)"]
    args = ["run", "--attribution", "process", "--log-dir", str(logs), "--location", "SE"]
    result = wattprint(*args, "--", *command, env=env)
    assert result.returncode == 0, result.stderr
    assert "(process attribution: as requested)" in result.stderr
    (run_dir,) = (logs / "default").iterdir()
    assert load_run(run_dir)["methods"].iloc[0] == "gpu=none;cpu=rapl@process;dram=rapl@process"
    document = json.loads((run_dir / "run.json").read_text())
    assert set(document["attribution"]["devices"]) == {"cpu0", "cpu1", "dram0", "dram1"}


def test_run_refuses_an_unknown_attribution(env: dict[str, str], tmp_path: Path) -> None:
    result = wattprint("run", "--attribution", "mine", "--", "true", env=env)
    assert result.returncode == 2
    assert "--attribution: invalid choice: 'mine'" in result.stderr


@pytest.mark.parametrize(("exit_code", "status"), [(3, "failed"), (0, "finished")])
def test_run_json_records_the_command_its_exit_code_and_a_failed_status(
    env: dict[str, str], tmp_path: Path, exit_code: int, status: str
) -> None:
    logs = tmp_path / "runs"
    command = [sys.executable, "-c", f"import sys; sys.exit({exit_code})"]
    args = ["run", "--quiet", "--log-dir", str(logs), "--location", "SE", "--", *command]
    result = wattprint(*args, env=env)
    assert result.returncode == exit_code, result.stderr
    (run_dir,) = (logs / "default").iterdir()
    document = json.loads((run_dir / "run.json").read_text())
    assert document["command"] == {"argv": command, "exit_code": exit_code}
    assert document["status"] == status


@pytest.mark.parametrize("gpus", ["-1", "0,-2", "0,,1", ""])
def test_run_refuses_a_negative_or_empty_gpu_index_naming_gpus(
    gpus: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_no_nvml(monkeypatch)
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--gpus", gpus, "--location", "SE", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wattprint: error: --gpus {gpus!r}: ") and "index >= 0" in err
    assert not (tmp_path / "wattprint-runs").exists()


INTERRUPTIBLE = textwrap.dedent(
    """
    import os, signal, sys, time
    received = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    print("ready", flush=True)
    deadline = time.monotonic() + 30
    while not received and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.5)  # clean-up; a second SIGINT would arrive in here
    with open(sys.argv[1], "w") as out:
        out.write(str(len(received)))
    sys.exit(130)
    """
)


def _interruptible(tmp_path: Path) -> tuple[list[str], Path, Path]:
    logs, count = tmp_path / "runs", tmp_path / "sigints"
    args = ["run", "--project", "int", "--log-dir", str(logs), "--location", "SE", "--"]
    command = [sys.executable, "-m", "tracker.cli", *args, sys.executable, "-c", INTERRUPTIBLE]
    return [*command, str(count)], logs, count


def test_sigint_to_wattprint_run_is_forwarded_once_and_the_command_finishes_its_epoch(
    env: dict[str, str], tmp_path: Path
) -> None:
    command, logs, count = _interruptible(tmp_path)
    wrapper = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert wrapper.stdout is not None and wrapper.stdout.readline() == b"ready\n"
    wrapper.send_signal(signal.SIGINT)  # e.g. kill -INT from another shell: only wattprint gets it
    _, stderr = wrapper.communicate(timeout=60)
    assert wrapper.returncode == 130
    assert b"Traceback" not in stderr and b"KeyboardInterrupt" not in stderr
    assert count.read_text() == "1"
    (run_dir,) = (logs / "int").iterdir()
    epochs = load_run(run_dir)
    assert len(epochs) == 1 and epochs["duration_s"].iloc[0] >= 0.5  # clean-up included
    assert not epochs["partial"].iloc[0]


# Starts a session whose controlling terminal is the pty named in argv[1], then runs the rest.
IN_TERMINAL = textwrap.dedent(
    """
    import os, sys
    os.setsid()
    terminal = os.open(sys.argv[1], os.O_RDWR)  # a session leader's first tty: its terminal
    for fd in (0, 1, 2):
        os.dup2(terminal, fd)
    os.execv(sys.argv[2], sys.argv[2:])
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals")
def test_ctrl_c_at_the_terminal_reaches_the_command_once_and_wattprint_waits_for_it(
    env: dict[str, str], tmp_path: Path
) -> None:
    command, logs, count = _interruptible(tmp_path)
    primary, secondary = os.openpty()
    wrapper = subprocess.Popen(
        [sys.executable, "-c", IN_TERMINAL, os.ttyname(secondary), *command], env=env
    )
    output = b""
    deadline = time.monotonic() + 60
    while wrapper.poll() is None and time.monotonic() < deadline:
        if select.select([primary], [], [], 0.1)[0]:
            output += os.read(primary, 4096)
            if b"ready" in output and b"\x03" not in output:
                os.write(primary, b"\x03")  # Ctrl-C: the terminal signals its foreground group
                output += b"\x03"
    wrapper.wait(timeout=10)
    os.close(primary)
    os.close(secondary)
    assert wrapper.returncode == 130, output.decode(errors="replace")
    assert b"Traceback" not in output and b"KeyboardInterrupt" not in output
    assert count.read_text() == "1"
    (run_dir,) = (logs / "int").iterdir()
    assert len(load_run(run_dir)) == 1
