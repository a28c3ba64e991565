"""Whole-node meters through the real Tracker: HPE Cray EX and GH200 nodes, fakes at the boundary.

NVML through tests/fake_nvml.py, RAPL through tests/fake_powercap.py, Cray pm_counters and the
Grace power meters through tests/fake_node.py; everything above them (discovery, the sampler
thread, epoch records, the CSVs and run.json) runs for real. The checks are the user's: each
joule counted once (the IT energy is the node's), ``other`` never negative, every figure exact
to its meter's resolution.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.fake_node import FakePmCounters, build_grace
from tests.fake_nvml import SimulatedGPU, constant_power, install_fake_nvml, install_no_nvml
from tests.fake_powercap import FakeZone, build_powercap, honour_file_modes
from tracker import EpochRecord, Tracker, load_run

CRAY = {
    "energy": 5_000_000,
    "cpu_energy": 1_000_000,
    "memory_energy": 200_000,
    "accel0_energy": 400_000,
    "accel1_energy": 410_000,
}
REST_J = 5000  # fans, NIC, storage and regulator loss each epoch, beyond the components


@pytest.fixture
def sysfs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    install_no_nvml(monkeypatch)  # tests with GPUs install theirs over it
    root = tmp_path / "sys"
    root.mkdir()
    monkeypatch.setenv("WATTPRINT_SYSFS_ROOT", str(root))
    return root


@pytest.fixture
def rapl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeZone]:
    install_no_nvml(monkeypatch)  # tests with GPUs install theirs over it
    zones = build_powercap(tmp_path / "powercap", sockets=1)
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(tmp_path / "powercap"))
    return zones


def two_gpus(monkeypatch: pytest.MonkeyPatch) -> list[SimulatedGPU]:
    gpus = [
        SimulatedGPU(power_w=constant_power(300.0)),
        SimulatedGPU(power_w=constant_power(250.0)),
    ]
    install_fake_nvml(monkeypatch, gpus)
    return gpus


def cray_epoch(
    tracker: Tracker,
    node: FakePmCounters,
    gpu_w: float,
    parts_j: dict[str, float],
    rest_j: float = REST_J,
    zones: dict[str, FakeZone] | None = None,
) -> tuple[EpochRecord, float]:
    """One epoch in which the node spends the GPUs' draw, ``parts_j`` and ``rest_j``.

    ``parts_j`` goes to RAPL where ``zones`` is given and to the node's own share files either
    way (which must then not be counted); the GPUs' share of ``energy`` is taken for a slightly
    longer span than the epoch, so it is certainly in. Returns the record and the joules the
    node's ``energy`` counter gained between the epoch's edges.
    """
    before = time.monotonic()
    tracker.epoch_start()
    time.sleep(0.3)
    for zone, joules in parts_j.items():
        if zones is not None:
            zones[zone].add_energy_j(joules)
    gpu_j = gpu_w * (time.monotonic() - before + 0.05)
    added = round(gpu_j + sum(parts_j.values()) + rest_j)
    node.add(
        energy=added,
        cpu_energy=parts_j.get("cpu0", 0.0) + 123_456,  # a share that must lose to RAPL
        memory_energy=parts_j.get("dram0", 0.0),
        accel0_energy=99_999,  # the GPUs' own counters win over these
        accel1_energy=99_999,
    )
    return tracker.epoch_end(), float(added)


def test_cray_node_with_nvidia_gpus_and_rapl_counts_each_joule_once(
    sysfs: Path, rapl: dict[str, FakeZone], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gpus = two_gpus(monkeypatch)
    node = FakePmCounters(sysfs, CRAY)
    parts = {"cpu0": 40.0, "dram0": 8.0}
    with Tracker("cray", tmp_path / "runs", intensity=100.0, verbose=0, interval=0.1) as tracker:
        results = [cray_epoch(tracker, node, 550.0, parts, zones=rapl) for _ in range(3)]
    for record, node_j in results:
        truth = sum(g.energy_j(record.start_s, record.end_s) for g in gpus)
        assert record.gpu_energy_j == pytest.approx(truth, rel=1e-3)  # NVML, not accelN
        assert record.cpu_energy_j == pytest.approx(40.0, rel=1e-3)  # RAPL, not cpu_energy
        assert record.dram_energy_j == pytest.approx(8.0, rel=1e-3)
        assert record.other_energy_j is not None and record.other_energy_j >= 0
        figures = (record.gpu_energy_j, record.cpu_energy_j, record.dram_energy_j)
        measured = sum(f for f in figures if f is not None)
        assert record.other_energy_j == pytest.approx(node_j - measured, abs=1e-6)
        assert record.it_energy_j == pytest.approx(node_j, abs=1e-6)  # the node's, once
        assert record.methods == "gpu=counter;cpu=rapl;dram=rapl;other=residual"
    epochs = load_run(tracker.run_dir)
    assert list(epochs["other_energy_j"]) == pytest.approx([r.other_energy_j for r, _ in results])
    devices = load_run(tracker.run_dir, devices=True)
    rows = devices[devices["kind"] == "other"]
    assert list(rows["device"]) == ["node"] * 3 and set(rows["method"]) == {"residual"}
    run = json.loads((tracker.run_dir / "run.json").read_text())
    assert run["totals"]["other_energy_j"] == pytest.approx(
        sum(r.other_energy_j or 0.0 for r, _ in results)
    )
    hardware = {h["device"]: h for h in run["hardware"]}
    assert set(hardware) == {"gpu0", "gpu1", "cpu0", "dram0", "node"}
    assert hardware["node"]["minus"] == ["*"] and "whole node" in hardware["node"]["scope"]
    assert "GPU" in hardware["gpu0"]["scope"] and run["coverage"]["other"] == "measured"


def test_cray_node_without_rapl_takes_cpu_and_memory_from_the_node_controller(
    sysfs: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    two_gpus(monkeypatch)
    node = FakePmCounters(sysfs, CRAY)  # conftest: no powercap tree, so no RAPL
    with Tracker("cray", tmp_path / "runs", intensity=100.0, verbose=0) as tracker:
        tracker.epoch_start()
        time.sleep(0.2)
        node.add(energy=2000, cpu_energy=150, memory_energy=30, accel0_energy=7, accel1_energy=7)
        record = tracker.epoch_end()
    assert record.methods == "gpu=counter;cpu=node-share;dram=node-share;other=residual"
    assert (record.cpu_energy_j, record.dram_energy_j) == (150.0, 30.0)  # whole joules, exact
    assert record.gpu_energy_j is not None and record.other_energy_j is not None
    assert record.other_energy_j == pytest.approx(2000 - 180 - record.gpu_energy_j, abs=1e-6)
    assert record.it_energy_j == pytest.approx(2000.0)
    run = json.loads((tracker.run_dir / "run.json").read_text())
    assert not any(h["method"] == "estimate" for h in run["hardware"])  # nothing estimated on top


def test_accelerator_files_stand_in_only_for_gpus_nvml_reads_by_power_alone(
    sysfs: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    gpus = [
        SimulatedGPU(power_w=constant_power(300.0)),
        SimulatedGPU(name="Tesla P100", power_w=constant_power(200.0), has_counter=False),
    ]
    install_fake_nvml(monkeypatch, gpus)
    node = FakePmCounters(sysfs, CRAY)
    with Tracker("cray", tmp_path / "runs", intensity=100.0, verbose=0) as tracker:
        tracker.epoch_start()
        time.sleep(0.2)
        node.add(energy=5000, accel1_energy=61, accel0_energy=1)
        record = tracker.epoch_end()
    by_device = {d.device: d for d in record.devices}
    assert by_device["gpu0"].method == "counter"  # NVML's counter beats accel0_energy
    assert (by_device["gpu1"].method, by_device["gpu1"].energy_j) == ("node-share", 61.0)


def test_components_above_the_node_meter_give_other_zero_and_a_warning_naming_both(
    sysfs: Path, rapl: dict[str, FakeZone], tmp_path: Path
) -> None:
    node = FakePmCounters(sysfs, {"energy": 10_000})
    with Tracker(
        "cray", tmp_path / "runs", components=("cpu", "dram", "other"), intensity=100.0, verbose=0
    ) as tracker:
        tracker.epoch_start()
        rapl["cpu0"].add_energy_j(40.0)
        rapl["dram0"].add_energy_j(8.0)
        node.add(energy=30)  # the node controller lags behind the CPU's own counter
        low = tracker.epoch_end()
        tracker.epoch_start()
        rapl["cpu0"].add_energy_j(40.0)
        node.add(energy=100)
        fine = tracker.epoch_end()
    assert low.other_energy_j == 0.0 and low.it_energy_j == pytest.approx(48.0)
    assert fine.other_energy_j == pytest.approx(60.0)
    warnings = [w for w in tracker.summary.warnings if "node (HPE Cray EX" in w]
    assert len(warnings) == 1
    assert "measured 30.0 J" in warnings[0] and "48.0 J" in warnings[0]
    assert "cpu0, dram0" in warnings[0]


def test_node_meter_failing_mid_run_is_marked_failed_warned_once_and_other_goes_empty(
    sysfs: Path, rapl: dict[str, FakeZone], tmp_path: Path
) -> None:
    node = FakePmCounters(sysfs, {"energy": 10_000})
    with Tracker("cray", tmp_path / "runs", intensity=100.0, verbose=0, interval=0.1) as tracker:
        tracker.epoch_start()
        rapl["cpu0"].add_energy_j(5.0)
        node.add(energy=100)
        first = tracker.epoch_end()
        tracker.epoch_start()
        node.path("energy").unlink()  # the controller's files vanish mid-epoch
        time.sleep(0.3)
        rapl["cpu0"].add_energy_j(5.0)
        broken = tracker.epoch_end()
        tracker.epoch_start()
        rapl["cpu0"].add_energy_j(5.0)
        after = tracker.epoch_end()
    assert first.other_energy_j == pytest.approx(95.0)
    for record in (broken, after):
        (row,) = [d for d in record.devices if d.component == "other"]
        assert row.method == "failed" and row.energy_j is None and record.other_energy_j is None
        assert record.cpu_energy_j == pytest.approx(5.0)  # the rest is still measured
        assert record.it_energy_j == pytest.approx(5.0)
    assert len([w for w in tracker.summary.warnings if "node (" in w and "stopped" in w]) == 1


def test_unreadable_pm_counters_are_missing_with_the_fix_and_other_stays_empty(
    sysfs: Path, rapl: dict[str, FakeZone], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    node = FakePmCounters(sysfs, {"energy": 10_000})
    node.path("energy").chmod(0)
    honour_file_modes(monkeypatch)
    tracker = Tracker("cray", tmp_path / "runs", intensity=100.0, verbose=0)
    with tracker, tracker.epoch():
        rapl["cpu0"].add_energy_j(5.0)
    (record,) = tracker.epochs
    assert record.other_energy_j is None and record.methods == "gpu=none;cpu=rapl;dram=rapl"
    run = json.loads((tracker.run_dir / "run.json").read_text())
    (gap,) = [m for m in run["missing"] if m["component"] == "other"]
    assert (
        gap["device"] == "node"
        and "0444" in gap["fix"]
        and run["coverage"]["other"] == ("not measured")
    )


def test_a_node_without_a_node_meter_has_no_other_anywhere(
    rapl: dict[str, FakeZone], tmp_path: Path
) -> None:
    tracker = Tracker("plain", tmp_path / "runs", intensity=100.0, verbose=0)
    with tracker, tracker.epoch():
        rapl["cpu0"].add_energy_j(5.0)
    (record,) = tracker.epochs
    assert record.other_energy_j is None and record.methods == "gpu=none;cpu=rapl;dram=rapl"
    assert not any(d.component == "other" for d in record.devices)
    epochs = load_run(tracker.run_dir)
    assert epochs["other_energy_j"].isna().all()  # empty, never 0
    run = json.loads((tracker.run_dir / "run.json").read_text())
    assert "other" not in run["coverage"] and run["totals"]["other_energy_j"] is None


GH200 = "NVIDIA GH200 480GB"


def test_gh200_gpu_is_the_module_less_its_grace_socket_and_nothing_is_added_on_top(
    sysfs: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (module,) = gpus = [SimulatedGPU(name=GH200, power_w=constant_power(620.0))]
    install_fake_nvml(monkeypatch, gpus)
    sensors = build_grace(sysfs, power_w=150.0)  # Grace socket 150 W; Module meter unused
    sensors["Module0"].set_power_w(9999.0)  # NVML's counter covers the module: it wins
    with Tracker("gh200", tmp_path / "runs", intensity=100.0, verbose=0) as tracker:
        records = []
        for _ in range(2):
            with tracker.epoch():
                time.sleep(0.5)
            records.append(tracker.epochs[-1])
    for record in records:
        module_j = module.energy_j(record.start_s, record.end_s)
        assert record.cpu_energy_j is not None  # Grace power polling, within 1%
        assert record.cpu_energy_j == pytest.approx(150.0 * record.duration_s, rel=0.01)
        assert record.gpu_energy_j == pytest.approx(module_j - record.cpu_energy_j, rel=2e-3)
        assert record.it_energy_j == pytest.approx(module_j, rel=1e-3)  # the module, once
        assert record.dram_energy_j is None and record.other_energy_j is None
        assert record.methods == "gpu=residual;cpu=power;dram=none"
    run = json.loads((tracker.run_dir / "run.json").read_text())
    hardware = {h["device"]: h for h in run["hardware"]}
    assert set(hardware) == {"gpu0", "cpu0"} and hardware["gpu0"]["minus"] == ["cpu0"]
    assert "GH200 module" in hardware["gpu0"]["scope"] and "LPDDR5X" in hardware["cpu0"]["scope"]
    (dram,) = [m for m in run["missing"] if m["component"] == "dram"]
    assert "part of a GH200 module or Grace socket" in dram["reason"]


def test_gh200_in_a_cray_node_puts_the_rest_beyond_the_modules_in_other(
    sysfs: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (module,) = gpus = [SimulatedGPU(name=GH200, power_w=constant_power(500.0))]
    install_fake_nvml(monkeypatch, gpus)
    build_grace(sysfs, power_w=100.0)
    node = FakePmCounters(sysfs, {"energy": 1_000_000})
    with Tracker("alps", tmp_path / "runs", intensity=100.0, verbose=0) as tracker:
        before = time.monotonic()
        tracker.epoch_start()
        time.sleep(0.4)
        added = round(500.0 * (time.monotonic() - before + 0.05) + 300)
        node.add(energy=added)
        record = tracker.epoch_end()
    module_j = module.energy_j(record.start_s, record.end_s)
    assert record.gpu_energy_j is not None and record.cpu_energy_j is not None
    assert record.gpu_energy_j + record.cpu_energy_j == pytest.approx(module_j, rel=1e-3)
    assert record.other_energy_j == pytest.approx(added - module_j, rel=1e-3)
    assert record.other_energy_j is not None and record.other_energy_j > 0
    assert record.it_energy_j == pytest.approx(float(added), abs=1e-6)


def test_gh200_without_grace_meters_files_the_module_as_the_gpu_and_estimates_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_fake_nvml(monkeypatch, [SimulatedGPU(name=GH200, power_w=constant_power(400.0))])
    tracker = Tracker("gh200", tmp_path / "runs", intensity=100.0, verbose=0)
    with tracker, tracker.epoch():
        time.sleep(0.1)
    (record,) = tracker.epochs
    assert record.methods == "gpu=counter;cpu=none;dram=none"
    run = json.loads((tracker.run_dir / "run.json").read_text())
    assert {m["component"] for m in run["missing"]} == {"cpu", "dram"}
    assert all("counted in gpu0" in m["reason"] for m in run["missing"])


def test_a_controller_restart_mid_run_neither_loses_the_node_nor_makes_other_negative(
    sysfs: Path, rapl: dict[str, FakeZone], tmp_path: Path
) -> None:
    node = FakePmCounters(sysfs, {"energy": 3_000_000})
    with Tracker("cray", tmp_path / "runs", intensity=100.0, verbose=0, interval=0.1) as tracker:
        tracker.epoch_start()
        for _ in range(4):
            time.sleep(0.1)
            node.add(energy=100)  # ~1 kW
        node.restart(energy=0)  # the counters start over at 0
        for _ in range(4):
            time.sleep(0.1)
            node.add(energy=100)
        record = tracker.epoch_end()
    assert record.other_energy_j is not None
    # 800 J spent; the read that sees the restart bridges the span since the one before at the
    # power before it (so the figure is near 800 J), never the 3 MJ the counter fell by
    assert 400.0 <= record.other_energy_j <= 1500.0


def test_the_console_and_the_report_show_the_rest_of_the_node(
    sysfs: Path, rapl: dict[str, FakeZone], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tracker.cli.main import main

    node = FakePmCounters(sysfs, {"energy": 10_000})
    with Tracker("cray", tmp_path / "runs", intensity=100.0) as tracker:
        tracker.epoch_start()
        rapl["cpu0"].add_energy_j(10.0)
        node.add(energy=110)
        tracker.epoch_end()
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("wattprint epoch 1")]
    assert "other " in line and "W (residual)" in line
    assert main(["report", str(tracker.run_dir)]) == 0
    out = capsys.readouterr().out
    assert "other Wh" in out and "other" in out.split("Totals per component")[1]
    assert "node: energy counter of HPE Cray EX node (pm_counters), less every other device" in out


def test_a_job_s_own_share_leaves_the_rest_of_the_node_out_and_says_why(
    sysfs: Path, rapl: dict[str, FakeZone], tmp_path: Path
) -> None:
    """Less the job's shares, the node's rest would hold the other jobs' CPU and memory energy."""
    node = FakePmCounters(sysfs, {"energy": 10_000})
    with Tracker(
        "cray", tmp_path / "runs", intensity=100.0, verbose=0, attribution="process"
    ) as tracker:
        tracker.epoch_start()
        rapl["cpu0"].add_energy_j(40.0)
        node.add(energy=100)
        record = tracker.epoch_end()
    assert record.other_energy_j is None
    assert "node" not in {d.device for d in record.devices}
    run = json.loads((tracker.run_dir / "run.json").read_text())
    assert run["coverage"]["other"] == "not measured"
    (gap,) = [m for m in run["missing"] if m["component"] == "other"]
    assert "not split between jobs" in gap["reason"] and "attribution='host'" in gap["fix"]
