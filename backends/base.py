"""The one interface every hardware meter implements, and the records meters hand upward.

A meter reports either a cumulative energy counter (NVML total energy, RAPL ``energy_uj``, the
estimates) or a power value (NVML power usage), always with the monotonic time of the read.
Integration, wrap correction and epoch cuts happen above this layer, in ``tracker.measure.sampler``.
"""

from __future__ import annotations

import abc
import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Component = Literal["gpu", "cpu", "dram", "other"]
Method = Literal["counter", "power", "rapl", "node-share", "estimate"]

COMPONENTS: tuple[Component, ...] = ("gpu", "cpu", "dram", "other")
"""``other`` is the rest of a node (fans, NIC, storage, regulator loss): measured only where a
whole-node meter exists, as that meter's reading less every component measured beside it."""

EVERY_OTHER_DEVICE = "*"
"""In ``MeterInfo.minus``: the meter's reading contains every other device measured (a node)."""


class MeterError(RuntimeError):
    """A meter could not be read: the tracker disables that meter, warns once and carries on.

    Meters raise one of the three subclasses, which say why. Anything else out of a meter's
    ``read()`` is a bug in the meter, not a failure of the hardware.
    """


class MeterUnavailable(MeterError):
    """The device or its interface is gone or absent (GPU lost, NVML shut down, zone vanished)."""


class MeterPermissionError(MeterError):
    """This process may not read the device (EACCES or EPERM, NVML no permission)."""


class MeterReadError(MeterError):
    """The read failed otherwise, or gave something that is not a reading (garbage, a timeout)."""


_ERRNO_ERRORS: dict[int, type[MeterError]] = {
    errno.ENOENT: MeterUnavailable,  # the file (a sysfs zone, /proc/stat) is gone
    errno.ENODEV: MeterUnavailable,  # the device behind an open file is gone
    errno.ENXIO: MeterUnavailable,
    errno.ENOTDIR: MeterUnavailable,  # a directory on the path was replaced
    errno.EACCES: MeterPermissionError,
    errno.EPERM: MeterPermissionError,
}


MIN_RATE_SPAN_S = 0.01
"""Counter reads closer together than this, in s (an epoch edge just after a sampler read), say
too little of power to be taken as a rate."""


def expected_energy_j(
    preceding_w: float | None, dt: float, max_power_w: float | None
) -> float | None:
    """The energy ``dt`` seconds at the preceding power would spend, at most the device's maximum.

    The preceding power is itself a counter difference (noisy over short reads, and raised by any
    wrap inferred before it): capped at ``max_power_w``, inferred wraps cannot feed on each other.
    None where no power is known.
    """
    if preceding_w is None:
        return None
    expected_j = preceding_w * dt
    return min(expected_j, max_power_w * dt) if max_power_w is not None else expected_j


def unwrapped_j(delta_j: float, wrap_j: float, expected_j: float | None) -> tuple[float, int]:
    """The energy between two reads of a counter that wraps at ``wrap_j``, and the wraps inferred.

    Below zero the counter wrapped once at least; beyond that, as many more wraps are inferred as
    bring the difference nearest ``expected_j`` (``expected_energy_j``), the trace of a reader
    starved for longer than a wrap period. Returns (energy in J, extra wraps inferred).
    """
    if delta_j < 0:
        delta_j += wrap_j
    extra = max(round((expected_j - delta_j) / wrap_j), 0) if expected_j is not None else 0
    return delta_j + extra * wrap_j, extra


def os_meter_error(device: str, doing: str, error: OSError) -> MeterError:
    """The ``MeterError`` for an ``OSError`` that ``device``'s meter met while ``doing`` a read.

    The one mapping of errnos for every meter that reads files: ENOENT, ENODEV, ENXIO and ENOTDIR
    give ``MeterUnavailable``; EACCES and EPERM ``MeterPermissionError``; any other errno (EINVAL
    from a FIFO, EIO, ENODATA) or none ``MeterReadError``. The message names the device, what
    failed, the file and the errno; raise it ``from error`` to keep the cause.
    """
    code = error.errno
    kind = _ERRNO_ERRORS.get(code, MeterReadError) if code is not None else MeterReadError
    where = f"{os.fsdecode(error.filename)}: " if error.filename is not None else ""
    name = f" ({errno.errorcode.get(code, code)})" if code is not None else ""
    return kind(f"{device}: {doing}: {where}{error.strerror or error}{name}")


@dataclass(frozen=True, slots=True)
class Reading:
    """One read of a meter.

    ``t_s`` is ``time.monotonic()`` at the read. Exactly one of ``energy_j`` (a cumulative counter,
    which may wrap at ``Meter.wrap_j``) and ``power_w`` (watts at that moment) is set.
    """

    t_s: float
    energy_j: float | None = None
    power_w: float | None = None


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """What a meter measures, as it appears in ``devices.csv`` and ``run.json``.

    ``device`` is the stable name used in logs (``gpu0``, ``cpu1``, ``dram0``); ``host_level`` marks
    meters shared by every process on the host (CPU package, DRAM), which one rank per host reads.
    ``scope`` says in words what the figure covers. ``minus`` names devices whose energy the
    meter's reading also contains (``EVERY_OTHER_DEVICE``: all of them, a whole-node meter): the
    device's figure is then its reading less theirs, so no joule is counted twice.
    ``attribution`` says how the job's share of a shared device was taken (``process``,
    ``attributed``, ``estimate``; see ``backends.attribution``), empty for the whole device.
    """

    device: str
    component: Component
    model: str
    method: Method
    host_level: bool
    detail: str = ""
    scope: str = ""
    minus: tuple[str, ...] = ()
    attribution: str = ""


@dataclass(frozen=True, slots=True)
class Missing:
    """Something that could not be measured directly: why, and what the user can do about it."""

    component: Component
    device: str
    reason: str
    fix: str = ""


@dataclass(slots=True)
class Found:
    """What one backend's discovery produced: working meters, and what it could not measure.

    ``notes`` are caveats the user should read about meters that work; the tracker keeps them
    with the run's warnings.
    """

    meters: list[Meter] = field(default_factory=list)
    missing: list[Missing] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, opened: Meter | Missing) -> None:
        """Keep what opening one device gave: a working meter, or why it cannot be measured."""
        if isinstance(opened, Missing):
            self.missing.append(opened)
        else:
            self.meters.append(opened)

    def extend(self, other: Found) -> None:
        """Add another backend's findings to these."""
        self.meters.extend(other.meters)
        self.missing.extend(other.missing)
        self.notes.extend(other.notes)


class Meter(abc.ABC):
    """A readable source of energy or power for one device.

    Subclasses set ``info`` and implement ``read``. ``fast`` says whether the meter is read on the
    training thread at an epoch boundary: worth it only for a read that is cheap (well under
    0.1 ms), never blocks, and is exact at that instant (RAPL files, NVML power, the estimates of
    ``backends.estimate``). Other meters are read only by the sampler thread and the boundary is
    completed from ``power_hint_w``: the NVML energy counter (~4 ms a read). ``wrap_j`` is the
    value in J at which a counter wraps to zero (RAPL), or None. ``max_power_w`` is the most power
    the device can draw, in W, where the hardware (or an estimate's model) says, else None: it
    bounds how fast a counter can wrap, ``wrap_j / max_power_w`` seconds at the least
    (``max_read_gap_s``, which the sampler keeps its period under).
    """

    info: MeterInfo
    fast: bool = True
    wrap_j: float | None = None
    max_power_w: float | None = None

    @abc.abstractmethod
    def read(self) -> Reading:
        """The meter's value now, stamped with the monotonic time of the read.

        Raises a ``MeterError`` subclass when the hardware cannot be read: ``MeterUnavailable``,
        ``MeterPermissionError`` or ``MeterReadError``.
        """

    def max_read_gap_s(self) -> float | None:
        """The longest this meter may go unread without losing energy, in s; None: no limit.

        A counter that wraps at ``wrap_j`` wraps no faster than every ``wrap_j / max_power_w``
        s. A meter whose driver widens a narrower hardware counter only when it is read (Intel
        GPU hwmon) overrides this with that hardware counter's wrap time.
        """
        if self.wrap_j and self.max_power_w and self.max_power_w > 0:
            return self.wrap_j / self.max_power_w
        return None

    def power_hint_w(self) -> float | None:
        """A cheap current power figure for a slow counter meter, or None where there is none."""
        return None

    def instant_power_w(self) -> float | None:
        """The device's power over the last few ms (a cheap read), or None where there is none.

        A slow counter meter uses it to place an epoch edge between two counter updates.
        """
        return None

    def process_share(
        self, pids: Callable[[], frozenset[int]]
    ) -> Callable[[], float | None] | None:
        """Where other processes use this device too, the share of ``pids``'s in its use, else None.

        The returned callable gives the share (0..1) over the span since its previous call, or
        None where it cannot be said; ``backends.attribution`` applies it. Most meters have no
        per-process view and return None.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional hook, most meters hold nothing
        """Release whatever the meter holds (handles, files)."""
