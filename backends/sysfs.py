"""The one way every sysfs reader finds and reads its files: powercap, hwmon, DRM, Cray.

Every path is resolved under one root, env ``WATTPRINT_SYSFS_ROOT`` (default ``/sys``), so a
container that bind-mounts the host's ``/sys`` parts elsewhere, and a test that builds a tree in
a temporary directory, point every reader at it with one variable.

Reads never block: ``read_attribute`` opens each file with ``O_NONBLOCK`` and reads it only when
``fstat`` shows a regular file, as sysfs attributes are. A FIFO or device in a counter's place (a
hand-made or bind-mounted tree) raises ``OSError`` (EINVAL) instead of leaving a training thread
stuck at an epoch edge. ``read_attribute`` and ``list_entries`` are the only places sysfs is
touched; tests wrap them to make a file refuse root, which file modes cannot.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

ROOT_ENV = "WATTPRINT_SYSFS_ROOT"
DEFAULT_ROOT = "/sys"

_ATTRIBUTE_MAX_BYTES = 256
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


def list_entries(directory: Path) -> list[str]:
    """The names in one sysfs directory. Raises ``OSError``."""
    return os.listdir(directory)


def hwmon_devices() -> list[tuple[Path, str]]:
    """Every hwmon device as ``(directory, name)``, in ``hwmonN`` order; none where absent.

    ``class/hwmon/hwmonN`` under the sysfs root, with the driver's ``name`` attribute (``""`` where
    it cannot be read). Readers pick theirs by name (``power_meter``, ``amdgpu``, ``i915``, ...).
    """
    base = sysfs_path("class", "hwmon")
    try:
        entries = list_entries(base)
    except OSError:
        return []
    numbered = sorted(
        (int(entry[5:]), entry)
        for entry in entries
        if entry.startswith("hwmon") and entry[5:].isdigit()
    )
    devices = []
    for _, entry in numbered:
        directory = base / entry
        try:
            name = read_attribute(directory / "name").strip()
        except OSError:
            name = ""
        devices.append((directory, name))
    return devices
