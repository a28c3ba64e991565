"""hwmon and iio trees in a temporary directory, shaped like the kernel's, with live values.

``build_hwmon`` lays out ``class/hwmon/hwmonN`` under a sysfs root (Linux
``Documentation/ABI/testing/sysfs-class-hwmon``): the ``name`` file, the given attributes and,
for a PCI device, the ``device`` link into ``devices/pci0000:00/<bus id>`` with its ``vendor``
and ``device`` ids. Point readers at it with env ``WATTPRINT_SYSFS_ROOT``.

A real sysfs value is produced when it is read. ``LiveSysfs`` gives a file that behaviour: it
wraps ``backends.sysfs.read_attribute`` (every reader's only way to read a file) so that a
registered path answers with a function of the monotonic time of the read; the file stays in
the tree, so listings and permissions behave as the kernel's. ``IntelEnergy`` is the i915/xe
driver's ``energy1_input``: a 32-bit register of 2^-14 J units widened to 64 bits only when read.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pytest

from backends import sysfs
from tests.fake_nvml import StepProfile


def build_hwmon(
    root: Path,
    number: int,
    name: str,
    attributes: Mapping[str, object],
    bus_id: str | None = None,
    pci_ids: tuple[str, str] = ("0x8086", "0x56a0"),
) -> Path:
    """``class/hwmon/hwmon<number>`` under ``root`` with ``name`` and ``attributes`` (as text)."""
    hwmon = root / "class" / "hwmon" / f"hwmon{number}"
    hwmon.mkdir(parents=True)
    (hwmon / "name").write_text(f"{name}\n")
    for attribute, value in attributes.items():
        (hwmon / attribute).write_text(f"{value}\n")
    if bus_id is not None:
        pci = root / "devices" / "pci0000:00" / bus_id
        pci.mkdir(parents=True, exist_ok=True)
        (pci / "vendor").write_text(f"{pci_ids[0]}\n")
        (pci / "device").write_text(f"{pci_ids[1]}\n")
        (hwmon / "device").symlink_to(pci)
    return hwmon


class LiveSysfs:
    """Files whose text is computed at each read, as sysfs attributes are."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._values: dict[Path, Callable[[float], str]] = {}
        self._lock = threading.Lock()
        real_read = sysfs.read_attribute

        def read_live(path: Path) -> str:
            text = real_read(path)  # the file's own checks: it exists, is readable, is regular
            with self._lock:
                value = self._values.get(Path(path))
                return value(time.monotonic()) + "\n" if value is not None else text

        monkeypatch.setattr(sysfs, "read_attribute", read_live)

    def serve(self, path: Path, value: Callable[[float], str]) -> None:
        """Answer reads of ``path`` (an existing file) with ``value(monotonic time)``."""
        with self._lock:
            self._values[path] = value


class IntelEnergy:
    """The i915/xe driver's ``energy1_input`` for a card drawing ``power_w``, in µJ.

    The hardware counts in 2^-14 J units into a 32-bit register; on each read of the file the
    driver adds the register's change since its previous read (``reg - prev``, or
    ``UINT_MAX - prev + reg`` past a wrap) to a 64-bit total: a wrap between two reads more
    than one wrap period apart is lost, as on the hardware.
    """

    UNIT_J = 2.0**-14

    def __init__(self, power_w: StepProfile, start_s: float) -> None:
        self.power_w = power_w
        self._start_s = start_s
        self._previous = self._register(start_s)
        self._total_units = 0

    def _register(self, t_s: float) -> int:
        return int(self.power_w.energy_j(self._start_s, t_s) / self.UNIT_J) % 2**32

    def __call__(self, t_s: float) -> str:
        register = self._register(t_s)
        if register >= self._previous:
            self._total_units += register - self._previous
        else:
            self._total_units += 0xFFFFFFFF - self._previous + register
        self._previous = register
        return str(int(self._total_units * self.UNIT_J * 1e6))


RAIL_MV = 5000  # the INA3221 sits on the 5 V side of each Jetson rail's regulator


def build_ina3221(root: Path, number: int, labels: tuple[str, str, str]) -> Path:
    """A mainline ``ina3221`` hwmon chip (JetPack 5/6): ``in[123]_label``, mV and mA per channel.

    Each channel reads ``RAIL_MV`` and 0 mA until ``serve_rail`` gives it a load.
    """
    attributes: dict[str, object] = {}
    for channel, label in enumerate(labels, start=1):
        attributes |= {
            f"in{channel}_label": label,
            f"in{channel}_input": RAIL_MV,
            f"curr{channel}_input": 0,
            f"in{channel}_enable": 1,
        }
    return build_hwmon(root, number, "ina3221", attributes | {"update_interval": 1}, None)


def build_ina3221x(root: Path, address: str, labels: tuple[str, str, str]) -> Path:
    """L4T's ``ina3221x`` iio device (JetPack 4): ``rail_name_N`` and ``in_power<N>_input`` (mW)."""
    device = root / "bus" / "i2c" / "drivers" / "ina3221x" / address / "iio:device0"
    device.mkdir(parents=True)
    (device.parents[1] / "uevent").write_text("DRIVER=ina3221x\n")
    for channel, label in enumerate(labels):
        (device / f"rail_name_{channel}").write_text(f"{label}\n")
        (device / f"in_power{channel}_input").write_text("0\n")
        (device / f"in_current{channel}_input").write_text("0\n")
        (device / f"in_voltage{channel}_input").write_text(f"{RAIL_MV}\n")
    return device


def serve_rail(live: LiveSysfs, chip: Path, channel: int, power_w: StepProfile) -> None:
    """Give a rail the load ``power_w``: mA at ``RAIL_MV`` on hwmon, mW on iio (channel from 1)."""
    if (chip / "name").exists():
        live.serve(chip / f"curr{channel}_input", lambda t: str(round(power_w(t) * 1e6 / RAIL_MV)))
    else:
        live.serve(chip / f"in_power{channel - 1}_input", lambda t: str(round(power_w(t) * 1e3)))
