"""The one way every sysfs reader finds and reads its files: powercap, hwmon, DRM, Cray.

Every path is resolved under one root, env ``WATTPRINT_SYSFS_ROOT`` (default ``/sys``), so a
container that bind-mounts the host's ``/sys`` parts elsewhere, and a test that builds a tree in
a temporary directory, point every reader at it with one variable.

Reads never block: ``read_attribute`` opens each file with ``O_NONBLOCK`` and reads it only when
``fstat`` shows a regular file, as sysfs attributes are. A FIFO or device in a counter's place (a
hand-made or bind-mounted tree) raises ``OSError`` (EINVAL) instead of leaving a training thread
stuck at an epoch edge. ``read_attribute``, ``list_entries`` and ``link_target`` are the only
places sysfs is touched; tests wrap them to make a file refuse root, which file modes cannot.

``list_hwmon`` is the one enumeration of hwmon devices (Linux
``Documentation/ABI/testing/sysfs-class-hwmon``): every reader that finds its chip by the hwmon
``name`` attribute (Intel GPUs, INA3221 rails, amdgpu) goes through it.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from backends.base import Meter, MeterInfo, MeterReadError, Reading, os_meter_error

ROOT_ENV = "WATTPRINT_SYSFS_ROOT"
DEFAULT_ROOT = "/sys"

logger = logging.getLogger(__name__)

_HWMON_DIR = re.compile(r"hwmon(\d+)")

_ATTRIBUTE_MAX_BYTES = 4096  # a sysfs attribute is at most one page (KFD properties: ~1 KiB)
_NOT_REGULAR: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def sysfs_root() -> Path:
    """The sysfs mount every reader resolves under: env ``WATTPRINT_SYSFS_ROOT``, else ``/sys``."""
    return Path(os.environ.get(ROOT_ENV) or DEFAULT_ROOT)


def sysfs_path(*parts: str) -> Path:
    """A path under the sysfs root, e.g. ``sysfs_path("class", "hwmon")``."""
    return sysfs_root().joinpath(*parts)


def read_attribute(path: Path) -> str:
    """The text of one sysfs attribute, freshly read (a sysfs value is produced at read time).

    Opened with ``O_NONBLOCK`` and read only if ``fstat`` shows a regular file: anything else
    raises ``OSError`` (EINVAL), since a read from it could block.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _NOT_REGULAR if test(mode)), "not a regular file")
            why = f"{kind}, not a regular file like a sysfs attribute: a read could block"
            raise OSError(errno.EINVAL, why, os.fspath(path))
        return os.read(fd, _ATTRIBUTE_MAX_BYTES).decode("ascii", errors="replace")
    finally:
        os.close(fd)


def read_uint(path: Path) -> int:
    """A non-negative integer attribute (``energy_uj``, ``energy1_input``, ``power1_input``).

    Raises OSError when the file cannot be read and ValueError when it holds anything else.
    """
    text = read_attribute(path)
    value = text.strip()
    if not (value.isascii() and value.isdigit()):
        raise ValueError(f"{path} holds {text!r}, not a non-negative integer")
    return int(value)


def read_meter_uint(device: str, what: str, path: Path) -> int:
    """``read_uint`` for a meter's read: every failure is a ``MeterError`` naming both.

    The errno says which (``os_meter_error``): a vanished file is unavailable, a refused one a
    permission error; text that is not a non-negative integer is a read error.
    """
    try:
        return read_uint(path)
    except OSError as exc:
        raise os_meter_error(device, f"cannot read its {what}", exc) from exc
    except ValueError as exc:
        raise MeterReadError(f"{device}: bad {what}: {exc}") from exc


def list_entries(directory: Path) -> list[str]:
    """The names in one sysfs directory. Raises ``OSError``."""
    return os.listdir(directory)


def link_target(path: Path) -> str:
    """The last part of the path a sysfs link points to (a hwmon's ``device``: its PCI bus id).

    Raises ``OSError`` when ``path`` is not a link or cannot be read.
    """
    return os.path.basename(os.readlink(path))


@dataclass(frozen=True, slots=True)
class Hwmon:
    """One hwmon device: its directory (``class/hwmon/hwmonN``) and its chip ``name``."""

    path: Path
    name: str

    @property
    def number(self) -> int:
        """N of ``hwmonN``: the kernel's registration order, stable while the driver is loaded."""
        return int(self.path.name[len("hwmon") :])


def list_hwmon(names: Collection[str]) -> list[Hwmon]:
    """The hwmon devices under ``class/hwmon`` of the sysfs root whose ``name`` is in ``names``.

    In ``hwmonN`` order. A device whose ``name`` cannot be read is skipped (logged): sysfs makes
    ``name`` readable by all, so it is not one of ours in a working tree. Raises ``OSError``
    when ``class/hwmon`` itself cannot be listed, so a caller can tell "no such chip" from
    "cannot look".
    """
    directory = sysfs_path("class", "hwmon")
    numbered = sorted(
        (int(m[1]), entry)
        for entry in list_entries(directory)
        if (m := _HWMON_DIR.fullmatch(entry))
    )
    found = []
    for _, entry in numbered:
        path = directory / entry
        try:
            name = read_attribute(path / "name").strip()
        except OSError as exc:
            logger.debug("hwmon %s: name unreadable (%s); skipped", path, exc)
            continue
        if name in names:
            found.append(Hwmon(path, name))
    return found


class HwmonPowerMeter(Meter):
    """A hwmon power file in µW (``power1_average``, ``power1_input``), polled, read as watts.

    The ABI (``Documentation/ABI/testing/sysfs-class-hwmon``) gives every ``power*`` file in
    microwatts: amdgpu's GPU power and the ACPI power meters of Grace and GH200 alike.
    """

    fast = True  # one sysfs read

    def __init__(self, info: MeterInfo, path: Path) -> None:
        self.info = info
        self._path = path

    def read(self) -> Reading:
        """The power the file reports now, in watts."""
        microwatts = read_meter_uint(self.info.device, "power", self._path)
        return Reading(t_s=time.monotonic(), power_w=microwatts / 1e6)
