"""NVIDIA Grace and GH200 power from the ACPI power-meter hwmon devices.

Grace firmware exposes one ACPI power meter per sensor and socket (kernel driver
``acpi_power_meter``; NVIDIA's Grace performance tuning guide, "Power telemetry"). Each is a hwmon
device whose ``power1_oem_info`` names it, ``Module Power Socket N``, ``Grace Power Socket N``,
``CPU Power Socket N`` or ``SysIO Power Socket N``, and whose ``power1_average`` is the average
power in µW over ``power1_average_interval`` ms (50 ms by default, per NVIDIA's ACPI tables).
There is no energy counter, so these are power meters, integrated by the sampler.

What each figure covers, and what wattprint makes of it (never two that overlap):

* ``Grace`` is the whole CPU socket: cores, SoC (``SysIO``) and its LPDDR5X memory. It is the
  ``cpuN`` figure; ``CPU`` (the core rail) stands in only where ``Grace`` is absent, and ``SysIO``
  is never added, as both lie inside ``Grace``. DRAM is inside it too, so no separate ``dram``
  figure is made (nor estimated) on a Grace node.
* ``Module`` (GH200 only) is the whole Grace Hopper module: GPU, HBM, the Grace socket and the
  module's regulator loss. NVML's energy counter on a GH200 covers the same module (Zeus, PR #172),
  so either one is the module's figure, the NVML counter first (an energy counter beats power
  polling); ``backends.discover`` files it as ``gpuN`` less ``cpuN`` (``MeterInfo.minus``): the
  GPU's figure is the module's energy that the Grace socket did not use (GPU, HBM and the
  module's regulator loss).

The driver may need ``acpi_power_meter.force_cap_on=y`` on the kernel command line before the
meters appear. Paths resolve under the sysfs root (``backends.sysfs``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from backends import sysfs
from backends.base import (
    Component,
    Found,
    MeterError,
    MeterInfo,
    Missing,
)

HWMON_NAME = "power_meter"  # the ACPI power meter driver (drivers/hwmon/acpi_power_meter.c)
_LABEL = re.compile(r"(Module|Grace|CPU|SysIO) Power Socket (\d+)")
SCOPES = {
    "Module": "the GH200 module: GPU, HBM, the Grace socket and the module's regulator loss",
    "Grace": "the Grace CPU socket: cores, SoC (SysIO) and LPDDR5X memory",
    "CPU": "the Grace CPU core rail only (no SoC, no memory)",
}


@dataclass(frozen=True, slots=True)
class GraceSensor:
    """One labelled ACPI power meter: its kind (Module, Grace, CPU, SysIO), socket and file."""

    kind: str
    socket: int
    power_path: Path


def find_sensors() -> tuple[list[GraceSensor], list[Missing]]:
    """Every labelled Grace power meter under ``class/hwmon``, and those that cannot be read.

    The label and ``power1_average`` sit in the hwmon directory or in its ``device``
    directory (the ACPI device), depending on the kernel; both are looked at.
    """
    sensors: list[GraceSensor] = []
    missing: list[Missing] = []
    try:
        meters = sysfs.list_hwmon((HWMON_NAME,))
    except OSError:
        return sensors, missing
    for hwmon in meters:
        for place in (hwmon.path, hwmon.path / "device"):
            try:
                label = sysfs.read_attribute(place / "power1_oem_info").strip()
            except OSError as error:
                if isinstance(error, PermissionError):
                    missing.append(_unreadable(place / "power1_oem_info", error))
                continue
            match = _LABEL.fullmatch(label)
            if match is not None:
                sensors.append(GraceSensor(match[1], int(match[2]), place / "power1_average"))
                break
    return sensors, missing


def find_grace() -> Found:
    """``cpuN`` meters (Grace socket, else CPU rail) and ``gpuN`` meters (GH200 Module).

    Module meters have device ``gpuN`` and component ``gpu``; ``backends.discover`` uses one only
    where NVML cannot read that module's GPU. A sensor that cannot be read is a ``Missing``.
    """
    sensors, missing = find_sensors()
    found = Found(missing=missing)
    by_socket: dict[int, dict[str, GraceSensor]] = {}
    for sensor in sensors:
        by_socket.setdefault(sensor.socket, {}).setdefault(sensor.kind, sensor)
    for socket, kinds in sorted(by_socket.items()):
        roles: list[tuple[Component, str, GraceSensor | None]] = [
            ("cpu", f"cpu{socket}", kinds.get("Grace") or kinds.get("CPU")),
            ("gpu", f"gpu{socket}", kinds.get("Module")),
        ]
        for component, device, chosen in roles:
            if chosen is None:
                continue
            opened = _open(component, device, chosen)
            found.add(opened)
    return found


def _open(
    component: Component, device: str, sensor: GraceSensor
) -> sysfs.HwmonPowerMeter | Missing:
    chip = "GH200" if sensor.kind == "Module" else "Grace"  # the Module meter: GH200 only
    model = f"NVIDIA {chip} {sensor.kind} Power Socket {sensor.socket}"
    info = MeterInfo(
        device,
        component,
        model,
        "power",
        host_level=component == "cpu",
        detail=str(sensor.power_path),
        scope=SCOPES[sensor.kind],
        minus=(f"cpu{sensor.socket}",) if sensor.kind == "Module" else (),
    )
    meter = sysfs.HwmonPowerMeter(info, sensor.power_path)
    try:
        meter.read()
    except MeterError as error:  # discovery never raises: every failure is a Missing
        cause = error.__cause__
        if isinstance(cause, PermissionError):
            return _unreadable(sensor.power_path, cause, component, device)
        return Missing(component, device, f"cannot read {sensor.power_path}: {error}")
    return meter


def _unreadable(
    path: Path, error: OSError, component: Component = "cpu", device: str = "cpu"
) -> Missing:
    reason = f"{path} cannot be read: {error.strerror or error}"
    fix = (
        f'sudo chmod a+r {path.parent}/power1_* (until reboot; a udev rule on SUBSYSTEM=="hwmon" '
        "keeps it), or run as root"
    )
    return Missing(component, device, reason, fix)
