"""Whole-node sysfs trees in a temporary directory, shaped like the real ones, for tests.

``FakePmCounters`` lays out what an HPE Cray EX node shows in ``/sys/cray/pm_counters`` (HPE CSM
docs, "User Access to Compute Node Power Data"): energy files holding ``<value> J <timestamp>
us`` in whole joules, ``freshness`` (bumped at every controller refresh) and ``startup``
(changed by a controller restart, which restarts the counters). ``build_grace`` lays out the
ACPI power-meter hwmon devices of an NVIDIA Grace or GH200 node: ``class/hwmon/hwmonN`` with
``name`` ``power_meter`` and, in ``device/``, ``power1_oem_info`` (``Module Power Socket 0``)
and ``power1_average`` in µW.

Both go under one root: point readers at it with env ``WATTPRINT_SYSFS_ROOT``. Values are written
to a sibling file and renamed into place, so a reader on another thread never sees half a value.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

GRACE_KINDS = ("Module", "Grace", "CPU", "SysIO")


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path``'s contents in one step, as a sysfs read sees them."""
    staging = path.with_name(f".{path.name}.tmp")
    staging.write_text(text)
    os.replace(staging, path)


class FakePmCounters:
    """A node controller's ``cray/pm_counters`` directory: whole-joule counters, in step.

    ``energies`` names the counter files and their starting values in J (``energy`` is the node's;
    ``cpu_energy``, ``memory_energy``, ``accel0_energy`` ... its parts). The test advances them
    with ``add`` (each change is one controller refresh: ``freshness`` goes up by one).
    """

    def __init__(self, root: Path, energies: dict[str, int]) -> None:
        self.directory = root / "cray" / "pm_counters"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.values = dict(energies)
        self.freshness = 1
        self.startup = 1_700_000_000
        write_atomically(self.directory / "version", "2\n")
        write_atomically(self.directory / "raw_scan_hz", "10\n")
        self._write_all()

    def add(self, **joules: float) -> None:
        """Advance counters by whole joules (fractions are kept back, as the controller does)."""
        for name, value in joules.items():
            self.values[name] = self.values[name] + round(value)
        self.freshness += 1
        self._write_all()

    def restart(self, **values: int) -> None:
        """The controller restarts: ``startup`` changes and every counter starts over (at 0)."""
        self.startup += 1
        self.values = dict.fromkeys(self.values, 0) | values
        self.freshness = 0
        self._write_all()

    def path(self, name: str) -> Path:
        """One file of the directory."""
        return self.directory / name

    def _write_all(self) -> None:
        stamp = time.time_ns() // 1000
        for name, value in self.values.items():
            write_atomically(self.directory / name, f"{value} J {stamp} us\n")
        write_atomically(self.directory / "freshness", f"{self.freshness}\n")
        write_atomically(self.directory / "startup", f"{self.startup}\n")


class FakeGraceSensor:
    """One ACPI power meter of a Grace/GH200 node: its label and its average power."""

    def __init__(self, device_dir: Path, label: str) -> None:
        self.device_dir = device_dir
        self.label = label

    @property
    def power_path(self) -> Path:
        return self.device_dir / "power1_average"

    def set_power_w(self, watts: float) -> None:
        """The average power the sensor shows from now on (written in µW)."""
        write_atomically(self.power_path, f"{round(watts * 1e6)}\n")


def build_grace(
    root: Path, sockets: int = 1, kinds: tuple[str, ...] = GRACE_KINDS, power_w: float = 100.0
) -> dict[str, FakeGraceSensor]:
    """ACPI power-meter hwmon devices for each socket and kind, keyed ``Module0``, ``Grace0``...

    After an unrelated hwmon device (``hwmon0``, a NIC's temperature sensor), as real nodes have.
    """
    hwmon = root / "class" / "hwmon"
    other = hwmon / "hwmon0"
    other.mkdir(parents=True, exist_ok=True)
    (other / "name").write_text("nvme\n")
    sensors: dict[str, FakeGraceSensor] = {}
    number = 1
    for socket in range(sockets):
        for kind in kinds:
            directory = hwmon / f"hwmon{number}"
            device_dir = directory / "device"
            device_dir.mkdir(parents=True)
            (directory / "name").write_text("power_meter\n")
            (device_dir / "power1_oem_info").write_text(f"{kind} Power Socket {socket}\n")
            (device_dir / "power1_average_interval").write_text("50\n")
            sensor = FakeGraceSensor(device_dir, f"{kind} Power Socket {socket}")
            sensor.set_power_w(power_w)
            sensors[f"{kind}{socket}"] = sensor
            number += 1
    return sensors
