"""The pyRAPL reader, with a stand-in ``pyRAPL`` module over a fake powercap tree.

The stand-in follows pyRAPL 0.2.3: ``Device`` is an IntEnum (PKG=0, DRAM=1); ``Sensor(devices,
socket_ids)`` opens each socket's package or DRAM ``energy_uj``, leaving out a device it cannot
open only when ``devices`` is None and raising ``PyRAPLCantRecordEnergyConsumption`` otherwise;
``Sensor.energy()`` returns ``[pkg s0, dram s0, pkg s1, ...]`` in micro-joules, -1 where not
monitored.
"""

from __future__ import annotations

import enum
import errno
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from backends.base import MeterPermissionError, MeterReadError, MeterUnavailable, Missing
from backends.cpu.pyrapl import PIP_FIX, find_pyrapl
from tests.fake_powercap import INTEL_RANGE_UJ, FakeZone, build_powercap


class Device(enum.IntEnum):
    PKG = 0
    DRAM = 1


class PyRAPLException(Exception):
    pass


class PyRAPLCantRecordEnergyConsumption(PyRAPLException):
    def __init__(self, device: Device | None) -> None:
        super().__init__()
        self.device = device


def fake_pyrapl(zones: dict[str, FakeZone], sockets: int) -> types.ModuleType:
    """A ``pyRAPL`` module whose sensors read the counter files of ``zones``."""

    class Sensor:
        def __init__(
            self, devices: list[Device] | None = None, socket_ids: list[int] | None = None
        ) -> None:
            self._socket_ids = sorted(socket_ids if socket_ids is not None else range(sockets))
            self._files: dict[tuple[Device, int], Path] = {}
            for device in devices if devices is not None else [Device.PKG, Device.DRAM]:
                prefix = "cpu" if device == Device.PKG else "dram"
                socket_zones = [zones.get(f"{prefix}{s}") for s in self._socket_ids]
                if any(zone is None or not zone.path.exists() for zone in socket_zones):
                    if devices is not None:
                        raise PyRAPLCantRecordEnergyConsumption(device)
                    continue
                for socket, zone in zip(self._socket_ids, socket_zones, strict=True):
                    assert zone is not None
                    zone.energy_path.open().close()  # pyRAPL opens the files here
                    self._files[device, socket] = zone.energy_path
            if not self._files:
                raise PyRAPLCantRecordEnergyConsumption(None)

        def energy(self) -> list[float]:
            result = [-1.0, -1.0] * (self._socket_ids[-1] + 1)
            for (device, socket), path in self._files.items():
                result[2 * socket + device] = float(path.read_text())
            return result

    module = types.ModuleType("pyRAPL")
    members: dict[str, Any] = {
        "__version__": "0.2.3",
        "Device": Device,
        "Sensor": Sensor,
        "PyRAPLException": PyRAPLException,
        "PyRAPLCantRecordEnergyConsumption": PyRAPLCantRecordEnergyConsumption,
    }
    for name, value in members.items():
        setattr(module, name, value)
    return module


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Build a powercap tree, point the range lookup at it, and install pyRAPL over it."""

    def install(**tree: Any) -> dict[str, FakeZone]:
        zones = build_powercap(tmp_path, **tree)
        monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(tmp_path))
        monkeypatch.setitem(sys.modules, "pyRAPL", fake_pyrapl(zones, tree.get("sockets", 2)))
        return zones

    return install


def test_pyrapl_not_installed_gives_missing_with_pip_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyRAPL", None)  # makes `import pyRAPL` raise ImportError

    found = find_pyrapl()

    assert found.meters == []
    assert found.missing == [
        Missing("cpu", "cpu", "pyRAPL is not installed", "pip install 'wattprint[pyrapl]'"),
        Missing("dram", "dram", "pyRAPL is not installed", "pip install 'wattprint[pyrapl]'"),
    ]
    assert PIP_FIX == "pip install 'wattprint[pyrapl]'"


def test_pyrapl_gives_package_and_dram_meters_per_socket_like_rapl(install: Any) -> None:
    zones = install(sockets=2)
    zones["cpu1"].set_energy_uj(10_000_000)
    zones["dram0"].set_energy_uj(250)

    found = find_pyrapl()

    assert [m.info.device for m in found.meters] == ["cpu0", "dram0", "cpu1", "dram1"]
    assert [m.info.component for m in found.meters] == ["cpu", "dram", "cpu", "dram"]
    assert found.missing == []
    for m in found.meters:
        assert (m.info.method, m.info.host_level, m.fast) == ("rapl", True, True)
        assert m.wrap_j == INTEL_RANGE_UJ / 1e6
    assert found.meters[2].info.detail == "pyRAPL 0.2.3 Sensor, socket 1 PKG"
    assert found.meters[2].read().energy_j == 10.0
    assert found.meters[1].read().energy_j == 250e-6
    zones["cpu1"].add_energy_j(1.5)
    assert found.meters[2].read().energy_j == 11.5


def test_pyrapl_meters_take_max_power_from_the_zone_constraints(install: Any) -> None:
    zones = install(sockets=1)
    zones["cpu0"].add_constraints(95_000_000, 120_000_000)

    found = find_pyrapl()

    assert [(m.info.device, m.max_power_w) for m in found.meters] == [
        ("cpu0", 120.0),
        ("dram0", None),
    ]


def test_pyrapl_without_dram_gives_missing_dram(install: Any) -> None:
    install(sockets=2, dram=False)

    found = find_pyrapl()

    assert [m.info.device for m in found.meters] == ["cpu0", "cpu1"]
    assert [(m.device, m.reason) for m in found.missing] == [
        ("dram0", "no DRAM RAPL zone on this CPU"),
        ("dram1", "no DRAM RAPL zone on this CPU"),
    ]


def test_one_socket_without_dram_does_not_hide_the_dram_of_the_others(install: Any) -> None:
    # A whole-machine pyRAPL Sensor drops DRAM on every socket when one socket has none.
    zones = install(sockets=2)
    zones["dram1"].remove()
    zones["dram0"].set_energy_uj(3_000_000)

    found = find_pyrapl()

    assert [m.info.device for m in found.meters] == ["cpu0", "dram0", "cpu1"]
    assert found.meters[1].read().energy_j == 3.0
    assert found.missing == [Missing("dram", "dram1", "no DRAM RAPL zone on this CPU", "")]


def test_pyrapl_failing_at_setup_gives_missing(install: Any) -> None:
    zones = install(sockets=1)
    zones["cpu0"].remove()  # pyRAPL finds no package zone: nothing it can record

    found = find_pyrapl()

    assert found.meters == []
    assert [(m.component, m.device) for m in found.missing] == [("cpu", "cpu"), ("dram", "dram")]
    assert all("PyRAPLCantRecordEnergyConsumption" in m.reason for m in found.missing)


def test_pyrapl_refused_by_permissions_gives_missing_with_chmod_fix(
    install: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    zones = install(sockets=1)

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied", str(zones["cpu0"].energy_path))

    monkeypatch.setattr(sys.modules["pyRAPL"].Sensor, "__init__", refuse)

    found = find_pyrapl()

    assert found.meters == []
    assert [m.component for m in found.missing] == ["cpu", "dram"]
    assert "CVE-2020-8694" in found.missing[0].reason
    assert found.missing[0].fix.startswith(
        "sudo chmod a+r /sys/class/powercap/intel-rapl:*/energy_uj "
        "/sys/class/powercap/intel-rapl:*/intel-rapl:*/energy_uj (until reboot)"
    )


def test_pyrapl_counter_vanished_mid_run_raises_meter_unavailable(install: Any) -> None:
    zones = install(sockets=1)
    cpu0 = find_pyrapl().meters[0]

    zones["cpu0"].remove()

    with pytest.raises(MeterUnavailable) as raised:
        cpu0.read()
    assert str(raised.value) == (
        f"cpu0: pyRAPL cannot read its counter: {zones['cpu0'].energy_path}: "
        "No such file or directory (ENOENT)"
    )
    assert isinstance(raised.value.__cause__, FileNotFoundError)


def test_pyrapl_counter_made_root_only_mid_run_raises_meter_permission_error(
    install: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    zones = install(sockets=1)
    dram0 = find_pyrapl().meters[1]
    path = str(zones["dram0"].energy_path)

    def refuse(self: Any) -> list[float]:
        raise PermissionError(errno.EACCES, "Permission denied", path)

    monkeypatch.setattr(sys.modules["pyRAPL"].Sensor, "energy", refuse)

    with pytest.raises(MeterPermissionError) as raised:
        dram0.read()
    assert str(raised.value) == (
        f"dram0: pyRAPL cannot read its counter: {path}: Permission denied (EACCES)"
    )


def test_pyrapl_garbage_counter_raises_meter_read_error(install: Any) -> None:
    zones = install(sockets=1)
    cpu0 = find_pyrapl().meters[0]

    zones["cpu0"].write_energy_text("garbage\n")

    with pytest.raises(MeterReadError, match=r"^cpu0: pyRAPL cannot read its counter: ValueError"):
        cpu0.read()


def test_pyrapl_no_longer_monitoring_a_device_raises_meter_unavailable(
    install: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(sockets=1)
    cpu0 = find_pyrapl().meters[0]
    monkeypatch.setattr(sys.modules["pyRAPL"].Sensor, "energy", lambda self: [-1.0, -1.0])

    with pytest.raises(
        MeterUnavailable, match=r"^cpu0: pyRAPL no longer reads it \(it returned -1\)"
    ):
        cpu0.read()


def test_pyrapl_counter_range_unknown_leaves_wrap_j_none(
    install: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(sockets=1)
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(tmp_path / "elsewhere"))

    found = find_pyrapl()

    assert [m.info.device for m in found.meters] == ["cpu0", "dram0"]
    assert [(m.wrap_j, m.max_power_w) for m in found.meters] == [(None, None), (None, None)]
