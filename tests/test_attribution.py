"""Attribution end to end: the job's share of a shared host and GPU, with the host kept beside it.

The host is a fake powercap tree drawn at a known power, or simulated GPUs; the load is real:
a busy child of this process (the job's, like a DataLoader worker) and a busy process outside
the job's tree. The expected share comes from the CPU times the kernel counted for each, so the
tests hold on a 2-core machine shared with other work.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.fake_nvml import SimulatedGPU, SimulatedMigSlice, install_fake_nvml, install_no_nvml
from tests.fake_powercap import FakeZone, build_powercap
from tracker import Tracker

PACKAGE_W = 40.0
EPOCH_S = 2.0
BUSY = "while True: pass"
WAIT_S = 10.0


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeZone]:
    """One CPU package drawing PACKAGE_W, its counter written every 5 ms from the clock."""
    install_no_nvml(monkeypatch)
    root = tmp_path / "powercap"
    zone = build_powercap(root, sockets=1, dram=False)["cpu0"]
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(root))
    start_uj, t0_s, stop = zone.energy_uj, time.monotonic(), threading.Event()

    def draw() -> None:
        while not stop.wait(0.005):
            zone.set_energy_uj(start_uj + round(PACKAGE_W * (time.monotonic() - t0_s) * 1e6))

    drawing = threading.Thread(target=draw)
    drawing.start()
    try:
        yield zone
    finally:
        stop.set()
        drawing.join(WAIT_S)


@pytest.fixture
def two_busy_processes() -> Iterator[None]:
    """A busy child of this process (in the job) and a busy process outside the job's tree.

    The second is started by a shell that exits at once, so it is nobody's child here.
    """
    job = subprocess.Popen([sys.executable, "-c", BUSY])
    shell = subprocess.run(
        ["sh", "-c", f'"{sys.executable}" -c "{BUSY}" >/dev/null 2>&1 & echo $!'],
        capture_output=True,
        text=True,
        check=True,
    )
    other = int(shell.stdout.strip())
    try:
        assert other not in {p.pid for p in psutil.Process().children(recursive=True)}
        yield
    finally:
        job.kill()
        job.wait(WAIT_S)
        os.kill(other, signal.SIGKILL)


def tree_cpu_s() -> float:
    """CPU seconds of this process and its descendants, as the kernel counts them."""
    total = 0.0
    for process in (psutil.Process(), *psutil.Process().children(recursive=True)):
        times = process.cpu_times()
        total += times.user + times.system
    return total


def busy_s() -> float:
    """The machine's busy CPU seconds (``/proc/stat``: all but idle, iowait, steal, guests)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq)


def run_epoch(tracker: Tracker) -> tuple[Any, float]:
    """One EPOCH_S epoch under load; its record and the tree's share of busy CPU time in it."""
    with tracker:
        tracker.epoch_start()
        tree0, busy0 = tree_cpu_s(), busy_s()
        time.sleep(EPOCH_S)
        share = (tree_cpu_s() - tree0) / (busy_s() - busy0)
        record = tracker.epoch_end()
    return record, share


def run_json(tracker: Tracker) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((tracker.run_dir / "run.json").read_text())
    return document


@pytest.mark.usefixtures("two_busy_processes")
def test_process_attribution_charges_the_job_its_share_of_the_package_and_keeps_the_host(
    package: FakeZone, tmp_path: Path
) -> None:
    tracker = Tracker("share", tmp_path, components=["cpu"], attribution="process", verbose=0)
    record, share = run_epoch(tracker)
    host_j = PACKAGE_W * record.duration_s
    assert 0.05 < share < 0.95  # two busy processes: the job's is a real part, not all
    assert record.cpu_energy_j == pytest.approx(host_j * share, rel=0.15)
    assert record.methods == "cpu=rapl@process"
    assert record.devices[0].method == "rapl@process"
    document = run_json(tracker)
    attribution = document["attribution"]
    assert (attribution["mode"], attribution["requested"]) == ("process", "process")
    cpu0 = attribution["devices"]["cpu0"]
    assert cpu0["attribution"] == "process"
    assert cpu0["host_energy_j"] >= host_j * 0.95  # the whole run: at least the epoch's host
    assert cpu0["share"] == pytest.approx(cpu0["job_energy_j"] / cpu0["host_energy_j"])
    assert cpu0["share"] == pytest.approx(share, rel=0.15)
    assert document["totals"]["cpu_energy_j"] == pytest.approx(record.cpu_energy_j)


@pytest.mark.usefixtures("two_busy_processes")
def test_host_attribution_charges_the_job_the_whole_package(
    package: FakeZone, tmp_path: Path
) -> None:
    tracker = Tracker("host", tmp_path, components=["cpu"], attribution="host", verbose=0)
    record, _ = run_epoch(tracker)
    assert record.cpu_energy_j == pytest.approx(PACKAGE_W * record.duration_s, rel=0.05)
    assert record.methods == "cpu=rapl"
    attribution = run_json(tracker)["attribution"]
    assert (attribution["mode"], attribution["devices"]) == ("host", {})


def test_the_decision_and_its_reason_are_in_the_start_line(
    package: FakeZone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "1")
    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 64)
    with Tracker("line", tmp_path, components=["cpu"]) as tracker:
        pass
    err = capsys.readouterr().err
    assert "cpu0 (rapl@process)" in err
    assert "process attribution: the SLURM allocation holds 1 of this node's 64 CPUs" in err
    assert run_json(tracker)["attribution"]["requested"] == "auto"


@pytest.mark.parametrize("value", ["shared", "", 1, "HOST"])
def test_an_unknown_attribution_is_refused_by_name(tmp_path: Path, value: object) -> None:
    with pytest.raises(ValueError, match="attribution must be one of host, process, auto"):
        Tracker("bad", tmp_path, attribution=value)  # type: ignore[arg-type]
    assert not (tmp_path / "bad").exists()


def test_the_environment_variable_sets_the_attribution_and_is_checked(
    package: FakeZone, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATTPRINT_ATTRIBUTION", "sometimes")
    with pytest.raises(ValueError, match="env WATTPRINT_ATTRIBUTION must be one of"):
        Tracker("env", tmp_path)
    monkeypatch.setenv("WATTPRINT_ATTRIBUTION", "process")
    with Tracker("env", tmp_path, components=["cpu"], verbose=0) as tracker:
        pass
    assert run_json(tracker)["attribution"]["mode"] == "process"


def test_a_gpu_shared_with_another_process_charges_the_job_its_utilisation_share(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """This process at 30 % SM and another at 10 %: the job gets 3/4 of the board's 300 W."""
    gpu = SimulatedGPU(processes={os.getpid(): 30, 4_000_001: 10})
    install_fake_nvml(monkeypatch, [gpu])
    tracker = Tracker("gpu", tmp_path, components=["gpu"], attribution="process", verbose=0)
    with tracker:
        tracker.epoch_start()
        time.sleep(1.0)
        record = tracker.epoch_end()
    board_j = gpu.energy_j(0.0, record.duration_s)
    assert record.gpu_energy_j == pytest.approx(board_j * 0.75, rel=0.05)
    assert record.methods == "gpu=counter@attributed"
    gpu0 = run_json(tracker)["attribution"]["devices"]["gpu0"]
    assert gpu0["share"] == pytest.approx(0.75)


def test_a_mig_slice_is_charged_its_share_of_the_board_as_an_estimate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mig = SimulatedMigSlice(slices=2)
    gpu = SimulatedGPU(mig=True, mig_slices=[mig])
    install_fake_nvml(monkeypatch, [gpu])
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", mig.uuid)
    tracker = Tracker("mig", tmp_path, components=["gpu"], attribution="host", verbose=0)
    with tracker:
        tracker.epoch_start()
        time.sleep(0.5)
        record = tracker.epoch_end()
    assert record.gpu_energy_j == pytest.approx(300.0 * record.duration_s * 2 / 7, rel=0.05)
    assert record.methods == "gpu=counter@estimate"
    document = run_json(tracker)
    assert document["coverage"]["gpu"] == "estimated"
    assert document["attribution"]["devices"]["gpu0"]["share"] == pytest.approx(2 / 7)
