"""Powercap (RAPL) trees in a temporary directory, shaped like the kernel's, for tests.

``build_powercap`` lays out what ``/sys/class/powercap`` shows (Linux
``Documentation/ABI/testing/sysfs-class-powercap``): the control-type directory
``intel-rapl/`` (with ``enabled``) holding the package zones ``intel-rapl:N``, each holding its
sub-zones ``intel-rapl:N:M`` (ids in hexadecimal, as the kernel writes them: ``intel-rapl:a``);
and, at the top, a link for every zone (``intel-rapl:0``, ``intel-rapl:0:0``, ...) as the class
directory has. With ``class_links=False`` the top-level links are left out, which is what a
bind-mounted ``/sys/devices/virtual/powercap`` looks like. Every zone has ``name``,
``energy_uj``, ``max_energy_range_uj`` and ``enabled``.

Point the reader at the tree with ``find_rapl(root)`` or env ``WATTPRINT_POWERCAP_ROOT``.

Unreadable counters: since Linux 5.10 ``energy_uj`` is root-only (CVE-2020-8694).
``FakeZone.make_unreadable`` sets mode 000 on ``energy_uj`` (``make_directory_unreadable`` on the
zone's directory), which the kernel enforces for ordinary users but not for root (it bypasses
file modes). ``honour_file_modes`` closes that gap: where the process can read mode-000 files,
it wraps ``backends.sysfs.read_attribute`` and ``list_entries``, the reader's only sysfs
accesses, to refuse them with the same ``PermissionError`` the kernel gives everyone else.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

Vendor = Literal["intel", "amd"]

# max_energy_range_uj = 0xFFFFFFFF x the kernel's energy unit in nano-joules / 1000.
INTEL_RANGE_UJ = 262_143_328_850  # unit 2^-14 J (61035 nJ), common on Intel packages
AMD_RANGE_UJ = 65_532_610_987  # unit 2^-16 J (15258 nJ), AMD Zen

_DEFAULT_RANGE_UJ: dict[Vendor, int] = {"intel": INTEL_RANGE_UJ, "amd": AMD_RANGE_UJ}


@dataclass
class FakeZone:
    """One zone directory of a fake powercap tree, and the hardware's behaviour on its counter."""

    path: Path
    name: str
    max_energy_range_uj: int
    link: Path | None = None  # its top-level entry in the class directory, if any

    @property
    def energy_path(self) -> Path:
        return self.path / "energy_uj"

    @property
    def energy_uj(self) -> int:
        """The counter as the file holds it now."""
        return int(self.energy_path.read_text())

    def set_energy_uj(self, value: int) -> None:
        """Set the counter; it must lie in 0..max_energy_range_uj like the hardware's."""
        if not 0 <= value <= self.max_energy_range_uj:
            raise ValueError(f"energy_uj {value} outside 0..{self.max_energy_range_uj}")
        self.write_energy_text(f"{value}\n")

    def add_energy_j(self, joules: float) -> None:
        """Advance the counter by ``joules``, wrapping past max_energy_range_uj back to 0.

        After its largest value the counter shows 0, so in 1 µJ steps the modulus is range + 1.
        """
        step_uj = round(joules * 1e6)
        self.set_energy_uj((self.energy_uj + step_uj) % (self.max_energy_range_uj + 1))

    def write_energy_text(self, text: str) -> None:
        """Put arbitrary text in ``energy_uj`` (to test what a reader does with garbage).

        Written to a sibling file and renamed into place: a sysfs read never sees half a value,
        and a sampler thread reading while a test advances the counter must not either.
        """
        staging = self.energy_path.with_name(".energy_uj.tmp")
        staging.write_text(text)
        os.replace(staging, self.energy_path)

    def add_constraints(self, *max_power_uw: int | str) -> None:
        """Give the zone power-limit constraints 0, 1, ... with these ``max_power_uw`` values.

        As the kernel shows them: ``constraint_N_name`` (long_term, short_term, peak_power) and
        ``constraint_N_max_power_uw``, the highest value the limit accepts; text is written as
        given, to test what a reader does with garbage.
        """
        names = ("long_term", "short_term", "peak_power")
        for number, value in enumerate(max_power_uw):
            (self.path / f"constraint_{number}_name").write_text(f"{names[number]}\n")
            (self.path / f"constraint_{number}_max_power_uw").write_text(f"{value}\n")

    def replace_energy_with_fifo(self) -> None:
        """Put a writerless FIFO where ``energy_uj`` was: a blocking open of it waits forever."""
        self.energy_path.unlink()
        os.mkfifo(self.energy_path)

    def make_unreadable(self) -> None:
        """Make ``energy_uj`` unreadable as Linux 5.10+ does for non-root users.

        Root ignores file modes: tests running as root also need ``honour_file_modes``.
        """
        self.energy_path.chmod(0)

    def make_directory_unreadable(self) -> None:
        """Make the zone's directory mode 000: nothing in it (sub-zones too) can be read or listed.

        Root ignores file modes: tests running as root also need ``honour_file_modes``.
        """
        self.path.chmod(0)

    def remove(self) -> None:
        """Make the zone vanish (its sub-zones with it), as when the driver is unloaded."""
        if self.link is not None and self.link.is_symlink():
            self.link.unlink()
        shutil.rmtree(self.path)


def build_powercap(
    root: Path,
    sockets: int = 2,
    *,
    dram: bool | None = None,
    core: bool = True,
    psys: bool = False,
    mmio: bool = False,
    dies: int = 1,
    vendor: Vendor = "intel",
    max_energy_range_uj: int | None = None,
    class_links: bool = True,
) -> dict[str, FakeZone]:
    """Build a powercap tree under ``root``; return its zones by the device names wattprint uses.

    Keys: ``cpu{S}`` and ``dram{S}`` (``cpu{S}-die{D}`` / ``dram{S}-die{D}`` when ``dies > 1``),
    plus ``core{S}``, ``psys`` and ``mmio{S}`` for the zones the reader must ignore. ``dram``
    defaults to what the vendor's kernel driver shows: Intel yes, AMD never. Each counter starts
    at a distinct value so that zones cannot be mixed up unnoticed.
    """
    with_dram = (vendor == "intel") if dram is None else dram
    range_uj = max_energy_range_uj or _DEFAULT_RANGE_UJ[vendor]
    control = root / "intel-rapl"
    control.mkdir(parents=True, exist_ok=True)
    (control / "enabled").write_text("1\n")
    zones: dict[str, FakeZone] = {}

    def add(parent: Path, zone_id: str, name: str, key: str) -> FakeZone:
        path = parent / zone_id
        path.mkdir()
        (path / "name").write_text(f"{name}\n")
        (path / "max_energy_range_uj").write_text(f"{range_uj}\n")
        (path / "enabled").write_text("1\n")
        link = root / zone_id if class_links and parent != root else None
        if link is not None:
            link.symlink_to(path.relative_to(root))
        zone = FakeZone(path, name, range_uj, link)
        zone.set_energy_uj(1_000_003 * (len(zones) + 1))
        zones[key] = zone
        return zone

    for socket in range(sockets):
        for die in range(dies):
            zone_number = socket * dies + die
            suffix = f"{socket}-die{die}" if dies > 1 else f"{socket}"
            name = f"package-{socket}-die-{die}" if dies > 1 else f"package-{socket}"
            package = add(control, f"intel-rapl:{zone_number:x}", name, f"cpu{suffix}")
            sub_zones = (["core"] if core else []) + (["dram"] if with_dram else [])
            for number, sub_name in enumerate(sub_zones):
                key = f"{sub_name}{suffix}"
                add(package.path, f"{package.path.name}:{number:x}", sub_name, key)
    if psys:
        add(control, f"intel-rapl:{sockets * dies:x}", "psys", "psys")
    if mmio:
        mmio_control = root / "intel-rapl-mmio"
        mmio_control.mkdir(exist_ok=True)
        for socket in range(sockets):
            add(mmio_control, f"intel-rapl-mmio:{socket:x}", f"package-{socket}", f"mmio{socket}")
    return zones


def honour_file_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the RAPL reader refuse what file modes deny, even where this process bypasses them.

    Where the kernel already refuses (an ordinary user) nothing is patched, so the real
    ``PermissionError`` reaches the reader. As root, the reader's two sysfs accesses,
    ``backends.sysfs.read_attribute`` and ``list_entries``, are wrapped to raise the same error
    the kernel gives everyone else: for a file no one may read, a directory no one may list, or
    a path through a directory no one may enter.
    """
    from backends import sysfs

    if not _bypasses_file_modes():
        return
    real_read, real_list = sysfs.read_attribute, sysfs.list_entries

    def read_as_ordinary_user(path: Path) -> str:
        _refuse_where_modes_deny(path)
        return real_read(path)

    def list_as_ordinary_user(directory: Path) -> list[str]:
        _refuse_where_modes_deny(directory)
        return real_list(directory)

    monkeypatch.setattr(sysfs, "read_attribute", read_as_ordinary_user)
    monkeypatch.setattr(sysfs, "list_entries", list_as_ordinary_user)


def _refuse_where_modes_deny(path: Path) -> None:
    """Raise the kernel's EACCES where no user may read ``path`` or enter a directory on its way.

    Links are followed as the kernel follows them; a path that does not exist is left to the real
    call to fail.
    """
    target = Path(os.path.realpath(path))
    try:
        denied = stat.S_IMODE(os.stat(target).st_mode) & 0o444 == 0 or any(
            stat.S_IMODE(os.stat(directory).st_mode) & 0o111 == 0 for directory in target.parents
        )
    except FileNotFoundError:
        return
    if denied:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))


def _bypasses_file_modes() -> bool:
    """Whether this process can open a file whose mode is 000 (root, CAP_DAC_OVERRIDE)."""
    with tempfile.TemporaryDirectory() as scratch:
        probe = Path(scratch) / "probe"
        probe.write_text("0\n")
        probe.chmod(0)
        try:
            with open(probe, "rb"):
                return True
        except PermissionError:
            return False
