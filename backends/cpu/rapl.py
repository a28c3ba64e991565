"""CPU package and DRAM energy from the kernel's powercap (RAPL) tree.

The powercap class (Linux ``Documentation/power/powercap/powercap.rst`` and
``Documentation/ABI/testing/sysfs-class-powercap``) shows each RAPL domain as a zone directory
holding ``name``, ``energy_uj`` (a cumulative counter in micro-joules) and
``max_energy_range_uj`` ("range of the above energy counter in micro-joules"). This reader
relies on:

* ``/sys/class/powercap`` lists every zone as a top-level link (``intel-rapl:0``,
  ``intel-rapl:0:0``, ...; the kernel writes zone ids in hexadecimal, so the 11th package is
  ``intel-rapl:a``) into ``/sys/devices/virtual/powercap/intel-rapl/``, where each sub-zone
  sits inside its package zone's directory. Discovery takes package zones from the top and
  their sub-zones from inside them, so it reads that class directory as well as a bind-mounted
  copy of ``/sys/devices/virtual/powercap`` (zones nested under ``intel-rapl/``).
* Package zones are named ``package-P`` (P = physical socket) or, on packages with several
  dies, ``package-P-die-D``; the zone number is the kernel's logical die id, not the socket.
  Their sub-zones ``core`` and ``uncore`` are parts of the package and are skipped; ``dram`` is
  not part of it and is metered. ``psys`` (platform) already contains package and DRAM, and the
  ``intel-rapl-mmio`` control type is a second interface to the same package counter: both
  are skipped so nothing is counted twice.
* AMD Zen CPUs report through the same ``intel-rapl`` control type (family 17h since Linux
  5.11; later kernels add 19h and 1Ah): ``package-P`` with a ``core`` sub-zone and no DRAM zone.
* Since Linux 5.10 ``energy_uj`` is readable by root only (CVE-2020-8694, "Platypus": the
  counter leaks what other processes compute); ``permission_fix`` says how to open it.

Files are read through ``backends.sysfs``, which never blocks: a FIFO or device in a counter's
place (a hand-made or bind-mounted tree) becomes a ``Missing`` at discovery, or a ``MeterError`` at
a read, instead of a training thread stuck at an epoch edge.

Wrap: the kernel reports ``max_energy_range_uj`` as the 32-bit status mask times the energy
unit, i.e. the largest value ``energy_uj`` shows; the counter moves in steps of one unit (15.3
to 61 µJ) and goes from that value back to 0, so the exact modulus is the range plus one unit,
which sysfs does not expose. ``wrap_j`` is the range itself: range + 1 µJ would be no more exact,
and the error is at most one unit per wrap (61 µJ in 262 kJ). Unwrapping is the sampler's job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backends import sysfs
from backends.base import (
    Component,
    Found,
    Meter,
    MeterInfo,
    Missing,
    Reading,
)
from backends.cpu.cpuinfo import cpu_info

ROOT_ENV = "WATTPRINT_POWERCAP_ROOT"
RAPL_COMPONENTS: tuple[Component, ...] = ("cpu", "dram")
"""What RAPL meters: each package, and its DRAM (in pyRAPL's ``Device`` order, PKG then DRAM)."""

UDEV_RULE_PATH = "/etc/udev/rules.d/99-wattprint-rapl.rules"
UDEV_RULE = (
    'ACTION!="remove", SUBSYSTEM=="powercap", KERNEL=="intel-rapl:*", '
    'RUN+="/bin/chmod a+r /sys%p/energy_uj"'
)
NO_TREE_FIX = (
    "load the RAPL driver: sudo modprobe intel_rapl_msr (it brings intel_rapl_common). "
    "Virtual machines and containers see no RAPL unless the host passes it through: bind-mount "
    "the host's /sys/devices/virtual/powercap (e.g. docker run -v "
    "/sys/devices/virtual/powercap:/host/powercap:ro) and set "
    f"{ROOT_ENV}=/host/powercap"
)

logger = logging.getLogger(__name__)

_CONTROL_TYPE = "intel-rapl"
_PACKAGE_ZONE = re.compile(r"intel-rapl:([0-9a-f]+)")  # zone ids are hexadecimal
_PACKAGE_NAME = re.compile(r"package-(\d+)(?:-die-(\d+))?")
_MAX_POWER_FILE = re.compile(r"constraint_\d+_max_power_uw")


def find_rapl(root: str | os.PathLike[str] | None = None) -> Found:
    """Meters for each socket's package and DRAM energy, and what could not be metered and why.

    ``root`` is the powercap directory; it defaults to env ``WATTPRINT_POWERCAP_ROOT``, else
    ``class/powercap`` under the sysfs root. Every package zone of the tree gives a ``cpu`` and a
    ``dram`` entry, each a meter or a ``Missing`` saying why not (see ``_survey``). Discovery
    never raises: whatever fails becomes a ``Missing``.
    """
    base = powercap_root(root)
    zones_dir = _zones_dir(base)
    surveyed = _survey(zones_dir) if zones_dir is not None else []
    if zones_dir is None or not surveyed:
        reason = f"no RAPL powercap interface at {base}"
        return Found(missing=[Missing(c, c, reason, NO_TREE_FIX) for c in RAPL_COMPONENTS])
    found = Found()
    model = cpu_info().model
    for entry in surveyed:
        opened = entry if isinstance(entry, Missing) else _open_zone(entry, zones_dir, model)
        found.add(opened)
    return found


def powercap_root(root: str | os.PathLike[str] | None = None) -> Path:
    """The powercap directory: ``root``, else env ``WATTPRINT_POWERCAP_ROOT``, else sysfs's.

    The last is ``class/powercap`` under the sysfs root (``backends.sysfs``, ``/sys`` by default).
    """
    if root is not None:
        return Path(root)
    explicit = os.environ.get(ROOT_ENV)
    return Path(explicit) if explicit else sysfs.sysfs_path("class", "powercap")


def permission_fix(zones_dir: str | os.PathLike[str]) -> str:
    """The commands that make ``energy_uj`` readable now, and after every reboot (udev rule).

    Then what works without root: a readable node meter, used instead where the node has one,
    and on a SLURM cluster with energy accounting the job's own figure from ``sacct``.
    """
    d = os.fspath(zones_dir)
    job = os.environ.get("SLURM_JOB_ID") or "$SLURM_JOB_ID"
    return (
        f"sudo chmod a+r {d}/intel-rapl:*/energy_uj {d}/intel-rapl:*/intel-rapl:*/energy_uj "
        f"(until reboot); to keep it: echo '{UDEV_RULE}' | sudo tee {UDEV_RULE_PATH} "
        "&& sudo udevadm trigger --subsystem-match=powercap (an admin's one-line rule). This "
        "lets every local user read RAPL again, the side channel CVE-2020-8694 closed; run as "
        "root instead where that matters. Without root: a node meter readable by users (such "
        "as a Cray node's power counters) is used instead where the node has one; under SLURM "
        "with energy accounting (AcctGatherEnergyType), read the job's own energy once it "
        f"ends: sacct -j {job} --format=JobID,ConsumedEnergy"
    )


class RaplMeter(Meter):
    """A RAPL energy counter; ``read_uj`` returns micro-joules or raises a ``MeterError``.

    One class for every RAPL reader (the sysfs files here, pyRAPL in ``backends.cpu.pyrapl``), so
    all of them hand the sampler the same raw, wrapping counter in joules, with the zone's
    ``max_power_w`` (see ``max_power_w``) bounding how fast it can wrap.
    """

    fast = True  # a sysfs read costs ~10 us

    def __init__(
        self,
        info: MeterInfo,
        read_uj: Callable[[], float],
        wrap_j: float | None,
        max_power_w: float | None,
    ) -> None:
        self.info = info
        self.wrap_j = wrap_j
        self.max_power_w = max_power_w
        self._read_uj = read_uj

    def read(self) -> Reading:
        """The counter now, in joules (it wraps at ``wrap_j``)."""
        t_s = time.monotonic()
        return Reading(t_s=t_s, energy_j=self._read_uj() / 1e6)


def rapl_info(
    device: str, component: Component, zone_name: str, cpu_model: str, detail: str
) -> MeterInfo:
    """What a RAPL meter measures, alike for every reader; only ``detail`` tells them apart.

    The model is the zone's name with the CPU's (``package-0 (Intel(R) Xeon(R) ...)``), or the
    zone's name alone where ``/proc/cpuinfo`` gives no model.
    """
    model = f"{zone_name} ({cpu_model})" if cpu_model else zone_name
    scope = RAPL_SCOPES[component]
    return MeterInfo(device, component, model, "rapl", True, detail=detail, scope=scope)


RAPL_SCOPES: dict[Component, str] = {
    "cpu": "the CPU package: cores, caches and uncore (not its DRAM)",
    "dram": "the DRAM attached to the package",
}


@dataclass(frozen=True, slots=True)
class RaplZone:
    """One metered powercap zone: a socket's (or die's) package, or its DRAM."""

    path: Path
    name: str
    component: Component
    device: str
    package: tuple[int, int]  # (socket, die); die is 0 on single-die packages

    @property
    def energy_path(self) -> Path:
        """The zone's cumulative energy counter, in micro-joules (``energy_uj``)."""
        return self.path / "energy_uj"

    @property
    def range_path(self) -> Path:
        """The counter's largest value in micro-joules, where it wraps (``max_energy_range_uj``)."""
        return self.path / "max_energy_range_uj"


def list_zones(root: Path) -> list[RaplZone]:
    """The package and DRAM zones of the powercap tree at ``root`` that ``_survey`` finds."""
    zones_dir = _zones_dir(root)
    surveyed = _survey(zones_dir) if zones_dir is not None else []
    return [entry for entry in surveyed if isinstance(entry, RaplZone)]


def _survey(zones_dir: Path) -> list[RaplZone | Missing]:
    """Each package zone in ``zones_dir`` and its DRAM zone, by socket and die, package first.

    A zone that cannot be read, or whose DRAM zone cannot be looked for, is a ``Missing`` in its
    place, so no package goes unmentioned. A zone whose ``name`` cannot be read counts as a
    package (it may be ``psys``; that cannot be told) named by its zone number (``cpuN`` and
    ``dramN``), which is its socket on single-die CPUs. Reads
    only the ``name`` files, which sysfs makes readable by all; ``core``, ``uncore``, ``psys``
    and zones of other control types are left out.
    """
    try:
        zone_dirs = _numbered(zones_dir, _PACKAGE_ZONE)
    except OSError as exc:
        reason, fix = _unreadable(zones_dir, exc, zones_dir)
        return [Missing(c, c, reason, fix) for c in RAPL_COMPONENTS]
    packages: list[tuple[tuple[int, int], RaplZone | Missing, RaplZone | Missing]] = []
    named: set[tuple[int, int]] = set()
    for zone_dir in zone_dirs:
        try:
            name = sysfs.read_attribute(zone_dir / "name").strip()
        except OSError as exc:
            number = int(zone_dir.name.rpartition(":")[2], 16)
            reason, fix = _unreadable(zone_dir, exc, zones_dir)
            cpu, dram = (Missing(c, f"{c}{number}", reason, fix) for c in RAPL_COMPONENTS)
            packages.append(((number, 0), cpu, dram))
            continue
        match = _PACKAGE_NAME.fullmatch(name)
        if match is None:
            logger.debug("RAPL zone %s (%r) is not a package zone; skipped", zone_dir, name)
            continue
        package = (int(match[1]), int(match[2] or 0))
        if package in named:
            logger.debug("RAPL zone %s repeats %s; skipped", zone_dir, name)
            continue
        named.add(package)
        suffix = f"{package[0]}-die{package[1]}" if match[2] is not None else f"{package[0]}"
        zone = RaplZone(zone_dir, name, "cpu", f"cpu{suffix}", package)
        packages.append((package, zone, _dram_zone(zone, f"dram{suffix}", zones_dir)))
    packages.sort(key=lambda entry: entry[0])
    return [entry for _, cpu, dram in packages for entry in (cpu, dram)]


def max_power_w(zone_dir: Path) -> float | None:
    """The largest ``constraint_N_max_power_uw`` of a zone in W, or None where none reads > 0.

    Each constraint (``long_term``, ``short_term``, ``peak_power``) is a power limit the hardware
    holds the zone to over its time window, and ``max_power_uw`` the highest value that limit
    accepts: the largest of them is the most the zone can draw as the hardware states it.
    Constraints a CPU does not support fail to read (ENODATA) and are skipped.
    """
    try:
        names = sysfs.list_entries(zone_dir)
    except OSError:
        return None
    limits_uw = [0]
    for name in names:
        if _MAX_POWER_FILE.fullmatch(name):
            with contextlib.suppress(OSError, ValueError):
                limits_uw.append(sysfs.read_uint(zone_dir / name))
    return max(limits_uw) / 1e6 or None


def _open_zone(zone: RaplZone, zones_dir: Path, model: str) -> RaplMeter | Missing:
    """A meter for ``zone`` if its counter reads now, else why not and how to fix it."""
    try:
        sysfs.read_uint(zone.energy_path)
        range_uj = sysfs.read_uint(zone.range_path)
    except PermissionError as exc:
        path = exc.filename or zone.energy_path
        reason = f"{path} is readable by root only (Linux 5.10+, CVE-2020-8694)"
        return Missing(zone.component, zone.device, reason, permission_fix(zones_dir))
    except (OSError, ValueError) as exc:
        return Missing(zone.component, zone.device, f"cannot read RAPL zone {zone.path}: {exc}")
    if range_uj == 0:
        return Missing(zone.component, zone.device, f"{zone.range_path} is 0: no usable counter")
    info = rapl_info(zone.device, zone.component, zone.name, model, f"powercap {zone.energy_path}")
    reader = _sysfs_reader(zone.device, zone.energy_path)
    return RaplMeter(info, reader, range_uj / 1e6, max_power_w(zone.path))


def _sysfs_reader(device: str, path: Path) -> Callable[[], float]:
    """A reader for one ``energy_uj`` file that turns every failure into a ``MeterError``."""
    return lambda: sysfs.read_meter_uint(device, "RAPL counter", path)


def _dram_zone(package: RaplZone, device: str, zones_dir: Path) -> RaplZone | Missing:
    """The DRAM sub-zone of a package zone, or why there is none or it cannot be told."""
    pattern = re.compile(re.escape(package.path.name) + r":([0-9a-f]+)")
    try:
        sub_dirs = _numbered(package.path, pattern)
    except OSError as exc:
        return Missing("dram", device, *_unreadable(package.path, exc, zones_dir))
    unreadable: Missing | None = None
    for sub_dir in sub_dirs:
        try:
            name = sysfs.read_attribute(sub_dir / "name").strip()
        except OSError as exc:
            unreadable = unreadable or Missing(
                "dram", device, *_unreadable(sub_dir, exc, zones_dir)
            )
            continue
        if name == "dram":
            return RaplZone(sub_dir, "dram", "dram", device, package.package)
    return unreadable or Missing("dram", device, "no DRAM RAPL zone on this CPU", "")


def _unreadable(zone_dir: Path, exc: OSError, zones_dir: Path) -> tuple[str, str]:
    """Why a zone directory (or its ``name``) could not be read, and the fix: (reason, fix)."""
    if isinstance(exc, PermissionError):
        reason = f"{exc.filename or zone_dir} cannot be read: permission denied"
        fix = (
            f"sudo chmod a+rx {zone_dir} && sudo chmod a+r {zone_dir}/name (sysfs makes both "
            f"readable by all), then: {permission_fix(zones_dir)}"
        )
        return reason, fix
    return f"cannot read RAPL zone {zone_dir}: {exc}", ""


def _zones_dir(base: Path) -> Path | None:
    """Where the package zones are: ``base`` (class layout) or ``base/intel-rapl`` (devices)."""
    for candidate in (base, base / _CONTROL_TYPE):
        try:
            if any(_PACKAGE_ZONE.fullmatch(name) for name in sysfs.list_entries(candidate)):
                return candidate
        except OSError:
            continue
    return None


def _numbered(directory: Path, pattern: re.Pattern[str]) -> list[Path]:
    """Entries of ``directory`` whose name fully matches ``pattern``, by their hexadecimal id.

    Raises ``OSError`` when ``directory`` cannot be listed.
    """
    matched = [
        (int(m[1], 16), name)
        for name in sysfs.list_entries(directory)
        if (m := pattern.fullmatch(name))
    ]
    return [directory / name for _, name in sorted(matched)]
