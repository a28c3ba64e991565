"""``wattprint devices``: one state per component, its devices, and the fix for what is missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.cli.shell import wattprint
from tests.fake_hwmon import build_hwmon, build_ina3221
from tests.fake_node import FakePmCounters, build_grace
from tests.fake_nvml import SimulatedGPU, install_fake_nvml, install_no_nvml
from tests.fake_powercap import build_powercap, honour_file_modes
from tracker.cli.devices import NO_NODE_METER
from tracker.cli.main import main


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
    headlines = [line for line in lines if not line.startswith((" ", "note  "))]
    assert [line.split()[0] for line in headlines] == ["gpu", "cpu", "dram", "other"]  # each once
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


def test_devices_lists_intel_gpus_and_jetson_rails_with_method_and_scope(
    env: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "sys"
    intel = {"energy1_input": 123_000_000, "power1_rated_max": 225_000_000}
    build_hwmon(root, 0, "i915", intel, bus_id="0000:03:00.0")
    build_ina3221(root, 1, ("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"))
    result = wattprint("devices", env=env | {"WATTPRINT_SYSFS_ROOT": str(root)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "gpu   measured on xpu0 (counter), gpu0 (power)" in lines
    assert any(
        line.startswith("        xpu0: counter, Intel GPU [8086:56a0] - pci 0000:03")
        for line in lines
    )
    assert any(
        "gpu0: power, Jetson rail VDD_CPU_GPU_CV (CPU, GPU and CV cores together)" in line
        for line in lines
    )
    assert any(line.startswith("note  gpu0 is the Jetson rail VDD_CPU_GPU_CV") for line in lines)
    assert [line for line in lines if "VDD_IN" in line] == [
        "note  Jetson rail VDD_IN is the module input, the whole module: it is not added to the "
        "components, which it already holds"
    ]
    machine = json.loads(
        wattprint("devices", "--json", env=env | {"WATTPRINT_SYSFS_ROOT": str(root)}).stdout
    )
    assert {m["device"] for m in machine["meters"] if m["component"] == "gpu"} == {"xpu0", "gpu0"}
    assert any("VDD_SOC" in note for note in machine["notes"])


def test_devices_lists_amd_gpus_by_method_and_scope_with_the_covered_gcd(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.fake_amdsmi import MI250X, SimulatedAmdGpu, install_fake_amdsmi

    install_fake_amdsmi(
        monkeypatch,
        [
            SimulatedAmdGpu("0000:29:00.0", 0, MI250X, power_field="average_socket_power"),
            SimulatedAmdGpu("0000:2c:00.0", 1, MI250X, power_field="average_socket_power"),
            SimulatedAmdGpu("0000:c1:00.0", 2, energy_key=None),
        ],
    )
    lines = devices(monkeypatch, capsys)
    assert "gpu   measured on gpu0 (counter), gpu2 (power)" in lines
    gpu0 = next(
        line for line in lines if line.startswith("        gpu0: counter, AMD Instinct MI250X")
    )
    assert "scope=package (both GCDs: bdf=0000:29:00.0 and bdf=0000:2c:00.0)" in gpu0
    assert any(line.startswith("note  gpu1 (AMD Instinct MI250X GCD") for line in lines)
    assert not any("NVML not found" in line for line in lines)  # not an NVIDIA machine
    assert main(["devices", "--json"]) == 0
    machine = json.loads(capsys.readouterr().out)
    assert [m["device"] for m in machine["meters"] if m["component"] == "gpu"] == ["gpu0", "gpu2"]
    assert "gpu0 covers both GCDs" in machine["notes"][0]


def test_devices_without_amdsmi_lists_hwmon_power_and_the_fix(
    tmp_path: Path, env: dict[str, str]
) -> None:
    from tests.fake_amdsmi import build_amdgpu_sysfs

    build_amdgpu_sysfs(tmp_path / "sys", ["0000:03:00.0"], product_name="AMD Radeon PRO W7900")
    result = wattprint("devices", env=env | {"WATTPRINT_SYSFS_ROOT": str(tmp_path / "sys")})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "gpu   measured on gpu0 (power)" in lines
    assert any(
        line.startswith("        gpu0: power, AMD Radeon PRO W7900 - bdf=0000:03:00.0")
        and line.endswith("hwmon=power1_average")
        for line in lines
    )
    assert any(line.startswith("note  AMD GPUs measured by polling hwmon power") for line in lines)
    assert any("pip install 'wattprint[amd]'" in line for line in lines)


# -- whole-node meters: HPE Cray EX pm_counters, NVIDIA Grace/GH200 -------------------------------


def test_devices_on_a_cray_node_says_what_each_figure_covers(
    tmp_path: Path, env: dict[str, str]
) -> None:
    FakePmCounters(tmp_path / "sys", {"energy": 10**6, "cpu_energy": 10**5})
    cray = env | {"WATTPRINT_SYSFS_ROOT": str(tmp_path / "sys")}
    result = wattprint("devices", env=cray)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    other = lines[lines.index("other measured on node (counter)") :]
    assert other[1].startswith("        node: counter, HPE Cray EX node (pm_counters) - ")
    assert other[1].endswith(
        "/cray/pm_counters/energy; covers the whole node (accelerators, CPUs, memory, NIC, "
        "fans, regulator loss), less every other device measured"
    )
    assert "cpu   measured on cpu0 (rapl), cpu1 (rapl)" in lines  # RAPL beats cpu_energy
    machine = json.loads(wattprint("devices", "--json", env=cray).stdout)
    assert machine["components"]["other"] == {"state": "measured", "measured": ["node"]}
    (meter,) = [m for m in machine["meters"] if m["device"] == "node"]
    assert meter["minus"] == ["*"] and meter["method"] == "counter"


def test_devices_without_a_node_meter_says_other_is_not_measured_and_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = devices(monkeypatch, capsys)
    assert lines[-1] == f"other not measured: {NO_NODE_METER}"
    assert main(["devices", "--json"]) == 0
    other = json.loads(capsys.readouterr().out)["components"]["other"]
    assert other == {"state": "not measured", "why": [NO_NODE_METER]}


def test_devices_on_a_gh200_shows_the_module_less_its_grace_socket(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_fake_nvml(monkeypatch, [SimulatedGPU(name="NVIDIA GH200 480GB")])
    build_grace(tmp_path / "sys")
    monkeypatch.setenv("WATTPRINT_SYSFS_ROOT", str(tmp_path / "sys"))
    assert main(["devices"]) == 0
    lines = capsys.readouterr().out.splitlines()
    gpu = lines[lines.index("gpu   measured on gpu0 (counter)") :]
    assert "; covers the whole GH200 module" in gpu[1] and gpu[1].endswith(", less cpu0")
    assert "cpu   measured on cpu0 (power)" in lines
    assert (
        "        dram: part of a GH200 module or Grace socket figure, which covers its CPU and "
        "memory: counted in cpu0" in lines
    )
