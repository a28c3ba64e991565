"""The NVIDIA Grace/GH200 ACPI power-meter reader against fake hwmon trees (tests/fake_node.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.base import Meter, MeterReadError, MeterUnavailable
from backends.node.grace import find_grace
from tests.fake_node import build_grace
from tests.fake_powercap import honour_file_modes


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WATTPRINT_SYSFS_ROOT", str(tmp_path / "sys"))
    return tmp_path / "sys"


def by_device(meters: list[Meter]) -> dict[str, Meter]:
    return {m.info.device: m for m in meters}


def test_grace_socket_is_the_cpu_and_the_module_holds_it(root: Path) -> None:
    build_grace(root, sockets=2)
    found = find_grace()
    meters = by_device(found.meters)
    assert set(meters) == {"cpu0", "cpu1", "gpu0", "gpu1"} and not found.missing
    cpu, module = meters["cpu1"].info, meters["gpu1"].info
    assert (cpu.component, cpu.method, cpu.model) == (
        "cpu",
        "power",
        "NVIDIA Grace Grace Power Socket 1",
    )
    assert "LPDDR5X" in cpu.scope and cpu.host_level and cpu.minus == ()
    assert (module.component, module.method, module.minus) == ("gpu", "power", ("cpu1",))
    assert module.model == "NVIDIA GH200 Module Power Socket 1" and "GPU, HBM" in module.scope


def test_cpu_rail_stands_in_where_the_grace_socket_meter_is_absent_and_sysio_is_never_added(
    root: Path,
) -> None:
    build_grace(root, kinds=("CPU", "SysIO"))
    meters = by_device(find_grace().meters)
    assert set(meters) == {"cpu0"} and "core rail only" in meters["cpu0"].info.scope


def test_power_is_power1_average_in_microwatts_as_watts(root: Path) -> None:
    sensors = build_grace(root, power_w=123.456)
    meter = by_device(find_grace().meters)["cpu0"]
    assert meter.read().power_w == pytest.approx(123.456)
    sensors["Grace0"].set_power_w(80.0)
    reading = meter.read()
    assert reading.power_w == pytest.approx(80.0) and reading.energy_j is None


def test_vanished_or_garbled_sensor_raises_a_meter_error(root: Path) -> None:
    sensors = build_grace(root)
    meters = by_device(find_grace().meters)
    sensors["Grace0"].power_path.write_text("n/a\n")
    with pytest.raises(MeterReadError, match="cpu0"):
        meters["cpu0"].read()
    sensors["Module0"].power_path.unlink()
    with pytest.raises(MeterUnavailable, match="power1_average"):
        meters["gpu0"].read()


def test_unreadable_sensor_gives_missing_with_the_chmod_fix(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sensors = build_grace(root)
    sensors["Grace0"].power_path.chmod(0)
    honour_file_modes(monkeypatch)
    found = find_grace()
    assert "cpu0" not in by_device(found.meters)
    (gap,) = found.missing
    assert (gap.component, gap.device) == ("cpu", "cpu0") and "cannot be read" in gap.reason
    assert gap.fix.startswith("sudo chmod a+r ") and "power1_*" in gap.fix


def test_hwmon_devices_without_a_grace_label_are_ignored(root: Path) -> None:
    build_grace(root, kinds=())  # only the unrelated nvme sensor
    unlabelled = root / "class" / "hwmon" / "hwmon7"
    unlabelled.mkdir()
    (unlabelled / "name").write_text("power_meter\n")
    (unlabelled / "power1_oem_info").write_text("Chassis Power\n")
    found = find_grace()
    assert not found.meters and not found.missing
