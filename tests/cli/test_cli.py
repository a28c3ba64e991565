"""The command line and process death, in real subprocesses over a simulated powercap tree."""

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

from tests.fake_nvml import install_no_nvml
from tests.fake_powercap import build_powercap, honour_file_modes
from tracker import load_run
from tracker.cli.main import main


def wattprint(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracker.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user on a machine with a two-socket RAPL tree and no NVIDIA driver."""
    root = tmp_path / "powercap"
    build_powercap(root, sockets=2)
    return os.environ | {"WATTPRINT_POWERCAP_ROOT": str(root), "PYTHONUNBUFFERED": "1"}


def test_devices_lists_meters_and_what_is_missing_with_the_fix(env: dict[str, str]) -> None:
    result = wattprint("devices", env=env)
    assert result.returncode == 0, result.stderr
    assert "cpu0" in result.stdout and "rapl" in result.stdout and "dram1" in result.stdout
    assert "NVML not found" in result.stdout and "fix:" in result.stdout
    machine = json.loads(wattprint("devices", "--json", env=env).stdout)
    assert {m["device"] for m in machine["meters"]} == {"cpu0", "cpu1", "dram0", "dram1"}


ROOT_ONLY = "intel-rapl:1/energy_uj is readable by root only (Linux 5.10+, CVE-2020-8694)"


def devices(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """``wattprint devices`` on a machine without NVIDIA driver: one block per component."""
    install_no_nvml(monkeypatch)
    assert main(["devices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    headlines = [line for line in lines if not line.startswith(" ")]
    assert [line.split()[0] for line in headlines] == ["gpu", "cpu", "dram"]  # one state each
    return lines


def test_devices_says_which_packages_are_measured_when_only_some_can_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    zones = build_powercap(tmp_path / "powercap", sockets=2)
    zones["cpu1"].make_unreadable()  # package 1 root-only, as Linux 5.10+ makes it
    honour_file_modes(monkeypatch)
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(tmp_path / "powercap"))
    lines = devices(monkeypatch, capsys)
    assert "cpu   measured on cpu0 (rapl); cpu1 not measured" in lines
    assert "dram  measured on dram0 (rapl), dram1 (rapl)" in lines
    cpu = lines[lines.index("cpu   measured on cpu0 (rapl); cpu1 not measured") :]
    assert cpu[1].startswith("        cpu0: rapl, package-0")
    assert cpu[2].startswith("        cpu1 not measured: ")
    assert cpu[2].endswith(ROOT_ONLY)
    assert cpu[3].startswith("        fix: sudo chmod a+r ")
    assert "gpu   not measured" in lines


def test_devices_shows_an_estimated_component_once_with_why_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = devices(monkeypatch, capsys)  # conftest: an empty powercap tree, so no RAPL at all
    cpu = lines[lines.index("cpu   estimated (cpu)") :]
    assert cpu[1].startswith("        cpu: estimate, ")
    assert cpu[2].startswith("        why: cpu cannot be measured directly: no RAPL powercap")
    assert cpu[3].startswith("        fix: load the RAPL driver")
    assert "dram  estimated (dram)" in lines
    assert "Measured:" not in lines and "Not measured:" not in lines
    gpu = lines[lines.index("gpu   not measured") :]
    assert gpu[1].startswith("        gpu: NVML not found") and gpu[2].startswith("        fix: ")
    assert main(["devices", "--json"]) == 0
    states = json.loads(capsys.readouterr().out)["components"]
    assert states["gpu"] == {"state": "not measured", "not_measured": ["gpu"]}
    assert states["cpu"]["state"] == "estimated" and states["cpu"]["estimated"] == ["cpu"]
    assert "no RAPL powercap interface" in states["cpu"]["why"][0]


def test_devices_on_an_amd_host_measures_the_packages_and_estimates_dram(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    build_powercap(tmp_path / "powercap", sockets=2, vendor="amd")  # AMD: no DRAM zone
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(tmp_path / "powercap"))
    lines = devices(monkeypatch, capsys)
    assert "cpu   measured on cpu0 (rapl), cpu1 (rapl)" in lines
    dram = lines[lines.index("dram  estimated (dram)") :]
    assert "        why: dram0 cannot be measured directly: no DRAM RAPL zone on this CPU" in dram


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


def test_cli_user_errors_are_one_line_without_traceback(env: dict[str, str]) -> None:
    result = wattprint("run", "--pue", "0.5", "--", "true", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("wattprint: error: pue must be >= 1.0")
    assert "Traceback" not in result.stderr
    missing = wattprint("run", env=env)
    assert missing.returncode == 2 and "needs a command" in missing.stderr


def test_intensity_text_needs_a_unit_per_kwh_in_run_and_in_estimate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_no_nvml(monkeypatch)
    monkeypatch.chdir(tmp_path)
    for argv in (
        ["run", "--intensity", "5kg", "--", "true"],
        ["estimate", "1000W:1", "--hours", "1", "--intensity", "5kg"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("wattprint: error: intensity '5kg' gives a mass but not per what")
        assert "'5kg/kWh'" in err
    assert not (tmp_path / "wattprint-runs").exists()
    assert main(["estimate", "1000W:1", "--hours", "100", "--intensity", "0.5kg/kWh"]) == 0
    assert "emissions 50 kg CO2e" in capsys.readouterr().out
    run = ["run", "--quiet", "--interval", "0.05", "--intensity", "0.5kg/kWh", "--"]
    assert main([*run, sys.executable, "-c", "import time; time.sleep(0.2)"]) == 0
    (run_dir,) = (tmp_path / "wattprint-runs" / "default").iterdir()
    assert load_run(run_dir)["intensity_g_per_kwh"].iloc[0] == pytest.approx(500.0)


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


TRAINING = textwrap.dedent(
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


def test_kill_9_mid_run_leaves_every_completed_epoch_parseable(
    env: dict[str, str], tmp_path: Path
) -> None:
    logs = tmp_path / "runs"
    child = subprocess.Popen(
        [sys.executable, "-c", TRAINING, str(logs)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    completed = 0
    deadline = time.monotonic() + 60
    while completed < 4 and time.monotonic() < deadline:
        completed = int(child.stdout.readline().split()[1])
    time.sleep(0.02)  # into the next epoch
    child.send_signal(signal.SIGKILL)
    child.wait()
    (run_dir,) = (logs / "crash").iterdir()
    epochs = load_run(run_dir)
    assert len(epochs) >= completed
    assert list(epochs["epoch"]) == list(range(1, len(epochs) + 1))
    assert epochs["cpu_energy_j"].notna().all()
    devices = load_run(run_dir, devices=True)
    assert set(devices["epoch"]) == set(epochs["epoch"])
    json.loads((run_dir / "run.json").read_text())  # whole, never half-written


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
