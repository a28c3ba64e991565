"""NVIDIA Jetson power rails from the board's INA3221 monitors, polled as power meters.

Jetson modules carry one or two TI INA3221 three-channel monitors, each channel a named supply
rail. Two drivers show them (Jetson Linux developer guide, "Power Monitor"):

* JetPack 5 and 6 (L4T 34.1+): the mainline ``ina3221`` hwmon driver (Linux
  ``Documentation/hwmon/ina3221.rst``): hwmon ``name`` ``ina3221``, ``in[123]_label`` (the
  rail), ``in[123]_input`` (bus voltage, mV) and ``curr[123]_input`` (current, mA). There is no
  power file: power is mV x mA.
* JetPack 4: L4T's ``ina3221x`` iio driver under ``bus/i2c/drivers/ina3221x/<addr>/iio:deviceN``:
  ``rail_name_<N>`` and ``in_power<N>_input`` (mW).

Rails are classified by their exact name, never by a substring (a rail named for the CPU may
feed the GPU too):

* GPU: ``VDD_GPU_SOC`` (AGX Orin: the GPU and the SoC, i.e. memory controller, fabric and
  engines, on one rail), ``VDD_GPU``/``GPU``/``POM_5V_GPU``/``VDD_SYS_GPU`` (older boards).
* CPU: ``VDD_CPU_CV`` (AGX Orin: CPU cores and the CV vision accelerators), ``VDD_CPU``,
  ``CPU``, ``POM_5V_CPU``, ``VDD_SYS_CPU``.
* DRAM: ``VDDQ_VDD2_1V8AO`` (AGX Orin's LPDDR5 supplies with the always-on 1.8 V rail),
  ``VDDRQ``, ``VDD_SYS_DDR``.
* ``VDD_CPU_GPU_CV`` (Orin NX and Nano, Xavier NX) feeds CPU, GPU and CV together and the board
  measures no part of it alone: it is metered once, as ``gpu0`` (the training accelerator) with
  that scope in its model and a note, and ``cpu0`` is reported as counted there, so no CPU
  estimate is added on top. It is never split by a guessed ratio.
* ``VDD_IN``, ``POM_5V_IN`` and ``VIN_SYS_5V0`` are the module's input: everything above plus
  the rest of the module. They are never a component (that would count each joule twice);
  ``board_input_rails`` returns them for a whole-node figure.
* Any other rail (``VDD_SOC``, ``CV``, ``SYS5V``, ...) belongs to no component; a note names it.

Each rail's meter is host-level (one rank per host reads it). A read is two i2c register
reads by the driver (under 1 ms), made at epoch edges too.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from backends import sysfs
from backends.base import (
    Component,
    Found,
    Meter,
    MeterError,
    MeterInfo,
    MeterPermissionError,
    MeterReadError,
    Missing,
    Reading,
    os_meter_error,
)

logger = logging.getLogger(__name__)

HWMON_NAME = "ina3221"
IIO_DRIVER = "ina3221x"

Scope = Literal["gpu", "cpu", "dram", "combined", "input"]

RAILS: dict[str, tuple[Scope, str]] = {
    "VDD_GPU_SOC": ("gpu", "GPU and SoC"),
    "VDD_GPU": ("gpu", "GPU"),
    "GPU": ("gpu", "GPU"),
    "POM_5V_GPU": ("gpu", "GPU"),
    "VDD_SYS_GPU": ("gpu", "GPU"),
    "VDD_CPU_CV": ("cpu", "CPU and CV cores"),
    "VDD_CPU": ("cpu", "CPU"),
    "CPU": ("cpu", "CPU"),
    "POM_5V_CPU": ("cpu", "CPU"),
    "VDD_SYS_CPU": ("cpu", "CPU"),
    "VDDQ_VDD2_1V8AO": ("dram", "DRAM supplies and always-on 1.8 V"),
    "VDDRQ": ("dram", "DRAM"),
    "VDD_SYS_DDR": ("dram", "DRAM"),
    "VDD_CPU_GPU_CV": ("combined", "CPU, GPU and CV cores together"),
    "VDD_IN": ("input", "module input"),
    "POM_5V_IN": ("input", "module input"),
    "VIN_SYS_5V0": ("input", "module 5 V system input"),
}
"""Each known rail: the component it is metered as (or why not) and what it feeds."""

_HWMON_LABEL = re.compile(r"in([123])_label")
_IIO_RAIL = re.compile(r"rail_name_(\d+)")


@dataclass(frozen=True, slots=True)
class Rail:
    """One INA3221 channel: its rail name and files (mV and mA on hwmon, or mW on iio)."""

    name: str
    paths: tuple[Path, ...]

    @property
    def scope(self) -> tuple[Scope, str] | None:
        """The rail's class and what it feeds, or None for a rail of no component."""
        return RAILS.get(self.name.upper())

    def power_w(self, device: str) -> float:
        """The rail's power now, in watts; raises a ``MeterError`` naming ``device``."""
        values = [_read_int(device, self.name, path) for path in self.paths]
        if len(values) == 1:  # iio in_powerN_input, mW
            return max(values[0], 0) / 1e3
        millivolts, milliamps = values  # a negative current (noise around 0 A) draws nothing
        return millivolts * max(milliamps, 0) / 1e6


class JetsonRailMeter(Meter):
    """The power of one INA3221 rail, polled; integrated by the sampler."""

    fast = True

    def __init__(self, info: MeterInfo, rail: Rail) -> None:
        self.info = info
        self.rail = rail

    def read(self) -> Reading:
        """The rail's power now, in watts."""
        return Reading(t_s=time.monotonic(), power_w=self.rail.power_w(self.info.device))


def find_jetson() -> Found:
    """Meters for a Jetson's GPU, CPU and DRAM rails; nothing on a host without INA3221.

    The module-input rails are left out (see ``board_input_rails``). Discovery never raises.
    """
    rails = list_rails()
    if not rails:
        return Found()
    found = Found()
    counts: dict[Component, int] = {}
    unattributed = []
    for rail in rails:
        scope = rail.scope
        if scope is None:
            unattributed.append(rail.name)
            continue
        kind, feeds = scope
        if kind == "input":
            found.notes.append(
                f"Jetson rail {rail.name} is the {feeds}, the whole module: it is not added to "
                "the components, which it already holds"
            )
            continue
        component: Component = "gpu" if kind == "combined" else kind
        device = _next_device(counts, component)
        opened = _open(device, component, rail, feeds)
        found.add(opened)
        if kind == "combined":
            cpu = _next_device(counts, "cpu")
            reason = (
                f"counted in {device}: rail {rail.name} feeds {feeds}; no part is measured alone"
            )
            found.missing.append(Missing("cpu", cpu, reason))
            found.notes.append(
                f"{device} is the Jetson rail {rail.name}, which feeds {feeds}: its figure is "
                "the CPU's and the GPU's together, and no CPU figure is given apart"
            )
    if unattributed:
        found.notes.append(
            f"Jetson rail(s) {', '.join(unattributed)}: no single component, not counted (the "
            "module input rail holds them)"
        )
    return found


def _next_device(counts: dict[Component, int], component: Component) -> str:
    """The next device name of ``component`` (``gpu0``, ``gpu1``, ...), counted in ``counts``."""
    number = counts.get(component, 0)
    counts[component] = number + 1
    return f"{component}{number}"


def board_input_rails() -> list[Rail]:
    """The module-input rails (``VDD_IN``, ``POM_5V_IN``, ``VIN_SYS_5V0``): node-level power.

    Each covers everything ``find_jetson``'s meters do and more, so it may only stand for the
    whole node, never be added to the components. Wrap one in a ``JetsonRailMeter``.
    """
    return [rail for rail in list_rails() if (scope := rail.scope) and scope[0] == "input"]


def list_rails() -> list[Rail]:
    """Every labelled INA3221 channel under the sysfs root: hwmon first, then the iio driver."""
    rails: list[Rail] = []
    with contextlib.suppress(OSError):
        for chip in sysfs.list_hwmon((HWMON_NAME,)):
            rails.extend(_hwmon_rails(chip.path))
    driver = sysfs.sysfs_path("bus", "i2c", "drivers", IIO_DRIVER)
    with contextlib.suppress(OSError):
        for address in sorted(sysfs.list_entries(driver)):
            with contextlib.suppress(OSError):
                for entry in sorted(sysfs.list_entries(driver / address)):
                    if entry.startswith("iio:device"):
                        rails.extend(_iio_rails(driver / address / entry))
    return rails


def _hwmon_rails(chip: Path) -> list[Rail]:
    """The labelled channels of one mainline ``ina3221`` hwmon chip."""
    rails = []
    for entry in sorted(sysfs.list_entries(chip)):
        if (match := _HWMON_LABEL.fullmatch(entry)) is None:
            continue
        channel = match[1]
        label = _label(chip / entry)
        if label:
            paths = (chip / f"in{channel}_input", chip / f"curr{channel}_input")
            rails.append(Rail(label, paths))
    return rails


def _iio_rails(device: Path) -> list[Rail]:
    """The named channels of one JetPack 4 ``ina3221x`` iio device."""
    rails = []
    for entry in sorted(sysfs.list_entries(device)):
        if (match := _IIO_RAIL.fullmatch(entry)) is None:
            continue
        label = _label(device / entry)
        if label:
            rails.append(Rail(label, (device / f"in_power{match[1]}_input",)))
    return rails


def _label(path: Path) -> str:
    """A channel's rail name; empty for an unreadable label or an unconnected channel (NC)."""
    try:
        label = sysfs.read_attribute(path).strip()
    except OSError as exc:
        logger.debug("INA3221 label %s unreadable: %s", path, exc)
        return ""
    return "" if label.upper() in ("", "NC") else label


def _open(device: str, component: Component, rail: Rail, feeds: str) -> JetsonRailMeter | Missing:
    """A meter for ``rail`` if it reads now, else why not and how to fix it."""
    meter = JetsonRailMeter(
        MeterInfo(
            device,
            component,
            f"Jetson rail {rail.name} ({feeds})",
            "power",
            host_level=True,
            detail=f"INA3221 {', '.join(str(p) for p in rail.paths)}",
        ),
        rail,
    )
    try:
        meter.read()
    except MeterPermissionError as exc:
        files = " ".join(str(p) for p in rail.paths)
        reason = f"rail {rail.name} is not readable: {exc}"
        return Missing(component, device, reason, f"sudo chmod a+r {files} (until reboot)")
    except MeterError as exc:
        return Missing(component, device, f"cannot read rail {rail.name}: {exc}")
    return meter


def _read_int(device: str, rail: str, path: Path) -> int:
    """One signed integer attribute, every failure a ``MeterError`` naming the device and rail."""
    try:
        text = sysfs.read_attribute(path)
    except OSError as exc:
        raise os_meter_error(device, f"cannot read rail {rail}", exc) from exc
    try:
        return int(text.strip())
    except ValueError:
        raise MeterReadError(
            f"{device}: rail {rail}: {path} holds {text!r}, not a number"
        ) from None
