"""Jetson INA3221 rails (JetPack 5/6 hwmon, JetPack 4 iio) from sysfs trees in tmp_path."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from backends import sysfs
from backends.base import MeterReadError
from backends.discover import discover
from backends.soc.jetson import JetsonRailMeter, board_input_rails, find_jetson
from tests.fake_hwmon import LiveSysfs, build_ina3221, build_ina3221x, serve_rail
from tests.fake_nvml import StepProfile, install_no_nvml, step_profile
from tests.fake_powercap import honour_file_modes
from tracker import DeviceEnergy, EpochRecord, Tracker

EPOCH_S = 0.6
GAP_S = 0.3
AGX_ORIN = ("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0")
AGX_ORIN_2 = ("NC", "VDDQ_VDD2_1V8AO", "NC")
ORIN_NX = ("VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC")


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    sys_root = tmp_path / "sys"
    monkeypatch.setenv(sysfs.ROOT_ENV, str(sys_root))
    install_no_nvml(monkeypatch)  # Jetson's integrated GPU has no NVML
    return sys_root


def device(record: EpochRecord, name: str) -> DeviceEnergy:
    return next(d for d in record.devices if d.device == name)


def models(found_meters: list[JetsonRailMeter]) -> dict[str, str]:
    return {m.info.device: m.info.model for m in found_meters}


def test_agx_orin_rails_are_gpu_cpu_and_dram_and_the_5v_input_is_no_component(root: Path) -> None:
    build_ina3221(root, 1, AGX_ORIN)
    build_ina3221(root, 2, AGX_ORIN_2)

    found = find_jetson()

    meters = [m for m in found.meters if isinstance(m, JetsonRailMeter)]
    assert [m.rail.name for m in meters] == ["VDD_GPU_SOC", "VDD_CPU_CV", "VDDQ_VDD2_1V8AO"]
    assert [(m.info.device, m.info.component, m.info.method) for m in meters] == [
        ("gpu0", "gpu", "power"),
        ("cpu0", "cpu", "power"),
        ("dram0", "dram", "power"),
    ]
    assert "GPU and SoC" in models(meters)["gpu0"]  # the rail's scope is in its name
    assert "CPU and CV" in models(meters)["cpu0"]
    assert all(m.info.host_level for m in meters) and not found.missing
    assert any("VIN_SYS_5V0" in n and "not added to the components" in n for n in found.notes)
    assert [r.name for r in board_input_rails()] == ["VIN_SYS_5V0"]


def test_the_combined_cpu_gpu_rail_is_counted_once_with_its_scope_and_no_cpu_beside_it(
    root: Path,
) -> None:
    build_ina3221(root, 1, ORIN_NX)

    found = find_jetson()

    (meter,) = found.meters
    assert (meter.info.device, meter.info.component) == ("gpu0", "gpu")
    assert "CPU, GPU and CV" in meter.info.model
    (cpu,) = found.missing
    assert (cpu.component, cpu.device) == ("cpu", "cpu0") and "counted in gpu0" in cpu.reason
    assert any("VDD_CPU_GPU_CV" in n and "no CPU figure" in n for n in found.notes)
    assert any("VDD_SOC" in n for n in found.notes)  # named, never counted
    assert [r.name for r in board_input_rails()] == ["VDD_IN"]


def test_discovery_adds_no_cpu_estimate_over_a_combined_rail_and_drops_the_nvml_absence(
    root: Path,
) -> None:
    build_ina3221(root, 1, ORIN_NX)

    found = discover()

    assert [(m.info.device, m.info.method) for m in found.meters] == [
        ("gpu0", "power"),
        ("dram", "estimate"),  # no DRAM rail on Orin NX: the labelled estimate
    ]
    assert {(m.component, m.device) for m in found.missing} >= {("cpu", "cpu0")}
    assert not [m for m in found.missing if m.component == "gpu"]  # "NVML not found" is moot
    assert not [m for m in found.meters if "VDD_IN" in m.info.model]


def test_jetpack_4_iio_rails_are_read_in_milliwatts(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chip = build_ina3221x(root, "1-0040", ("POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"))
    (chip / "in_power1_input").write_text("4321\n")

    found = find_jetson()

    assert [(m.info.device, m.info.component) for m in found.meters] == [
        ("gpu0", "gpu"),
        ("cpu0", "cpu"),
    ]
    assert found.meters[0].read().power_w == pytest.approx(4.321)
    assert [r.name for r in board_input_rails()] == ["POM_5V_IN"]


def test_hwmon_power_is_millivolts_times_milliamps(root: Path) -> None:
    chip = build_ina3221(root, 1, AGX_ORIN)
    (chip / "in1_input").write_text("5080\n")
    (chip / "curr1_input").write_text("1843\n")
    gpu = find_jetson().meters[0]
    assert gpu.read().power_w == pytest.approx(5.080 * 1.843)
    (chip / "curr1_input").write_text("-2\n")  # noise around 0 A on an idle rail
    assert gpu.read().power_w == 0.0
    (chip / "curr1_input").write_text("lots\n")
    with pytest.raises(MeterReadError, match="gpu0: rail VDD_GPU_SOC"):
        gpu.read()


def test_unknown_and_unconnected_rails_are_never_metered(root: Path) -> None:
    build_ina3221(root, 1, ("VDD_SOC", "NC", "VDD_5V0_WIFI"))
    found = find_jetson()
    assert not found.meters and not found.missing
    assert any("VDD_SOC" in n and "VDD_5V0_WIFI" in n for n in found.notes)


def test_no_ina3221_gives_nothing(root: Path) -> None:
    assert find_jetson().meters == [] and find_jetson().missing == [] and not board_input_rails()


def test_an_unreadable_rail_is_missing_with_the_chmod_fix(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chip = build_ina3221(root, 1, AGX_ORIN)
    (chip / "curr2_input").chmod(0)
    honour_file_modes(monkeypatch)

    found = find_jetson()

    assert [m.info.device for m in found.meters] == ["gpu0"]
    (missing,) = found.missing
    assert (missing.component, missing.device) == ("cpu", "cpu0")
    assert "not readable" in missing.reason
    assert f"sudo chmod a+r {chip}/in2_input {chip}/curr2_input" in missing.fix


def loads(t0: float) -> dict[str, StepProfile]:
    """Each rail's power, changing only between epochs (in the gaps), in watts."""
    period = EPOCH_S + GAP_S
    steps = {"VDD_GPU_SOC": 12.0, "VDD_CPU_CV": 4.0, "VDDQ_VDD2_1V8AO": 1.5, "VIN_SYS_5V0": 500.0}
    return {
        rail: step_profile(
            [(t0 - 10, watts)] + [(t0 + k * period - GAP_S / 2, watts * (1 + k)) for k in (1, 2)]
        )
        for rail, watts in steps.items()
    }


def test_epochs_match_each_rail_s_energy_and_the_input_rail_is_never_counted(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = build_ina3221(root, 1, AGX_ORIN), build_ina3221(root, 2, AGX_ORIN_2)
    t0 = time.monotonic() + 0.3
    power = loads(t0)
    live = LiveSysfs(monkeypatch)
    for chip, channel, rail in (
        (first, 1, "VDD_GPU_SOC"),
        (first, 2, "VDD_CPU_CV"),
        (first, 3, "VIN_SYS_5V0"),  # 500 W: counted anywhere, every total would show it
        (second, 2, "VDDQ_VDD2_1V8AO"),
    ):
        serve_rail(live, chip, channel, power[rail])
    with Tracker("orin", tmp_path / "runs", intensity=300.0, verbose=0) as tracker:
        for k in range(3):
            time.sleep(max(0.0, t0 + k * (EPOCH_S + GAP_S) - time.monotonic()))
            with tracker.epoch():
                time.sleep(EPOCH_S)
    for record in tracker.epochs:
        truth = {rail: p.energy_j(record.start_s, record.end_s) for rail, p in power.items()}
        for name, rail in (("gpu0", "VDD_GPU_SOC"), ("cpu0", "VDD_CPU_CV")):
            assert device(record, name).method == "power"
            assert device(record, name).energy_j == pytest.approx(truth[rail], rel=1e-2)
        assert device(record, "dram0").energy_j == pytest.approx(truth["VDDQ_VDD2_1V8AO"], rel=1e-2)
        components_j = truth["VDD_GPU_SOC"] + truth["VDD_CPU_CV"] + truth["VDDQ_VDD2_1V8AO"]
        assert record.it_energy_j == pytest.approx(components_j, rel=1e-2)


def test_a_rail_lost_mid_run_is_failed_and_warned_once(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = build_ina3221(root, 1, AGX_ORIN), build_ina3221(root, 2, AGX_ORIN_2)
    live = LiveSysfs(monkeypatch)
    serve_rail(live, first, 1, step_profile([(0.0, 10.0)]))
    serve_rail(live, second, 2, step_profile([(0.0, 2.0)]))
    with Tracker("lost", tmp_path / "runs", interval=0.05, intensity=1.0, verbose=0) as tracker:
        with tracker.epoch():
            time.sleep(0.2)
        with tracker.epoch():
            time.sleep(0.1)
            shutil.rmtree(second)  # the second monitor's i2c bus goes away
            time.sleep(0.1)
        with tracker.epoch():
            time.sleep(0.1)
    before, losing, after = tracker.epochs
    assert device(before, "dram0").energy_j == pytest.approx(2.0 * before.duration_s, rel=1e-2)
    assert device(losing, "dram0").method == "failed"
    assert device(after, "dram0").method == "failed" and device(after, "dram0").energy_j is None
    assert device(after, "gpu0").energy_j == pytest.approx(10.0 * after.duration_s, rel=1e-2)
    assert (
        len([w for w in tracker.summary.warnings if "dram0" in w and "stopped working" in w]) == 1
    )
