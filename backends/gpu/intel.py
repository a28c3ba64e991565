"""Intel discrete GPU energy from the i915 and xe drivers' hwmon counter (``energy1_input``, µJ).

Both drivers register a hwmon device for discrete cards only (Arc, Flex, Data Center GPU Max;
integrated graphics has none): Linux ``Documentation/ABI/testing/sysfs-driver-intel-i915-hwmon``
(kernel 6.2+) and ``sysfs-driver-intel-xe-hwmon`` (6.5+). This reader relies on:

* The card's hwmon ``name`` is ``i915`` or ``xe`` (``backends.sysfs.list_hwmon``). i915 also
  registers ``i915_gtN`` per graphics tile: those are parts of the card and are not metered.
* ``energy1_input`` is the card's cumulative energy in micro-joules (xe's ``energy2_input``,
  the package, is a part of it and is not read). It is world-readable on xe (mode 0444); where
  a distribution restricts it, a ``Missing`` gives the chmod and udev fix.
* There is no instantaneous power file; ``power1_rated_max`` (the card's rated power) and
  ``power1_max`` (its sustained limit, PL1), in micro-watts, bound what it draws.
* The hardware energy register is 32 bits wide (2^32 units of 2^-14 J: 262144 J, which the
  drivers' comment puts at "approximately 4.36 minutes" at 1000 W). The driver widens it to 64
  bits only when the file is read, adding the register's change since its previous read, so a
  wrap goes uncaught, and its 262 kJ lost, if the file is left unread for a whole wrap period.
  The file itself never wraps (``wrap_j`` is None): ``max_read_gap_s`` gives the sampler that
  period at the card's maximum power, and the sampler reads at least three times in it.

Every GPU found is metered, in PCI bus order as ``xpu0``, ``xpu1``, ...: hwmon knows nothing of
``ZE_AFFINITY_MASK`` or a process's device, so the meters are host-level (one rank per host
reads them, as for CPU packages) and cover every Intel card of the host.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from backends import sysfs
from backends.base import Found, Meter, MeterInfo, Missing, Reading

logger = logging.getLogger(__name__)

HWMON_NAMES = ("i915", "xe")
REGISTER_WRAP_J = 2**32 / 2**14
"""Energy the 32-bit hardware register holds before it wraps, at its usual 2^-14 J unit."""
ASSUMED_MAX_POWER_W = 1000.0
"""The draw assumed for the wrap bound where the card states no power limit (the drivers' own)."""

KERNEL_FIX = (
    "use Linux 6.2+ for i915 or 6.5+ for xe (energy1_input first appeared there), or the "
    "vendor's backported driver"
)


def find_intel_gpus() -> Found:
    """A meter for each Intel discrete GPU's ``energy1_input``, and what cannot be read and why.

    A host with no ``i915``/``xe`` hwmon device gives nothing (not a ``Missing``: most hosts
    have no Intel card). Discovery never raises.
    """
    try:
        cards = sysfs.list_hwmon(HWMON_NAMES)
    except OSError as exc:
        logger.debug("no hwmon class to look for Intel GPUs in: %s", exc)
        return Found()
    located = sorted((_locate(card) for card in cards), key=lambda c: (c.bus_id, c.hwmon.number))
    found = Found()
    for index, card in enumerate(located):
        opened = _open(f"xpu{index}", card)
        found.add(opened)
    return found


class IntelGpuMeter(Meter):
    """One card's ``energy1_input``: a sysfs read (~10 µs), exact at the instant of the read."""

    fast = True

    def __init__(self, info: MeterInfo, energy_path: Path, max_power_w: float | None) -> None:
        self.info = info
        self.max_power_w = max_power_w
        self._energy_path = energy_path

    def read(self) -> Reading:
        """The card's energy since the driver loaded, in joules (the file holds µJ)."""
        before_s = time.monotonic()
        energy_uj = sysfs.read_meter_uint(self.info.device, "GPU energy", self._energy_path)
        # The driver takes the value during the read: stamp it halfway through.
        return Reading(t_s=(before_s + time.monotonic()) / 2, energy_j=energy_uj / 1e6)

    def max_read_gap_s(self) -> float:
        """The hardware register's shortest wrap period: its range over the card's most power."""
        return REGISTER_WRAP_J / (self.max_power_w or ASSUMED_MAX_POWER_W)


@dataclass(frozen=True, slots=True)
class _Card:
    """A card's hwmon device, its PCI bus id (``""`` where unreadable) and PCI ids."""

    hwmon: sysfs.Hwmon
    bus_id: str
    model: str


def _locate(hwmon: sysfs.Hwmon) -> _Card:
    """The card's PCI address (the hwmon ``device`` link) and ``vendor:device`` ids."""
    bus_id = ""
    with contextlib.suppress(OSError):
        bus_id = sysfs.link_target(hwmon.path / "device")
    ids = []
    for attribute in ("vendor", "device"):
        with contextlib.suppress(OSError):
            ids.append(sysfs.read_attribute(hwmon.path / "device" / attribute).strip())
    pci = f" [{':'.join(i.removeprefix('0x') for i in ids)}]" if len(ids) == 2 else ""
    return _Card(hwmon, bus_id, f"Intel GPU{pci}")


def _open(device: str, card: _Card) -> IntelGpuMeter | Missing:
    """A meter for ``card`` if its counter reads now, else why not and how to fix it."""
    energy_path = card.hwmon.path / "energy1_input"
    try:
        sysfs.read_uint(energy_path)
    except PermissionError:
        reason = f"{energy_path} is not readable by this user"
        return Missing("gpu", device, reason, permission_fix(card.hwmon))
    except FileNotFoundError:
        reason = f"{card.hwmon.name} hwmon at {card.hwmon.path} has no energy1_input"
        return Missing("gpu", device, reason, KERNEL_FIX)
    except (OSError, ValueError) as exc:
        return Missing("gpu", device, f"cannot read {energy_path}: {exc}")
    where = f"pci {card.bus_id}, " if card.bus_id else ""
    detail = f"{where}{card.hwmon.name} hwmon {energy_path}"
    info = MeterInfo(device, "gpu", card.model, "counter", host_level=True, detail=detail)
    return IntelGpuMeter(info, energy_path, _max_power_w(card.hwmon.path))


def permission_fix(hwmon: sysfs.Hwmon) -> str:
    """The commands that make the card's ``energy1_input`` readable now and after reboot."""
    rule = (
        f'ACTION=="add", SUBSYSTEM=="hwmon", ATTR{{name}}=="{hwmon.name}", '
        'RUN+="/bin/chmod a+r /sys%p/energy1_input"'
    )
    return (
        f"sudo chmod a+r {hwmon.path}/energy1_input (until reboot); to keep it: echo '{rule}' | "
        "sudo tee /etc/udev/rules.d/99-wattprint-intel-gpu.rules && sudo udevadm trigger "
        "--subsystem-match=hwmon"
    )


def _max_power_w(path: Path) -> float | None:
    """The larger of ``power1_rated_max`` and ``power1_max`` in W, or None where neither is > 0."""
    limits_uw = [0]
    for name in ("power1_rated_max", "power1_max"):
        with contextlib.suppress(OSError, ValueError):
            limits_uw.append(sysfs.read_uint(path / name))
    return max(limits_uw) / 1e6 or None
