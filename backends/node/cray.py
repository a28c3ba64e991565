"""HPE Cray EX node energy from the node controller's ``cray/pm_counters`` files.

HPE's CSM documentation ("User Access to Compute Node Power Data") describes the directory
(``/sys/cray/pm_counters``, world-readable, so no root is needed):

* ``energy`` is the whole node's accumulated energy (accelerators, CPUs, memory, NIC, fans and
  regulators alike); ``cpu_energy``, ``memory_energy`` and ``accel_energy`` are parts of it, and
  nodes with several accelerators have ``accel0_energy``, ``accel1_energy``, ... (GH200 nodes
  also ``cpu0_energy``, ...). Every file holds ``<value> <unit> <timestamp> us``; energies are in
  whole joules (``J``), ``*_power`` files in watts.
* ``freshness`` counts up (about 10 Hz) each time the controller refreshes the set, and
  ``startup`` changes when the controller restarts, which restarts the counters: energy
  differences only mean something while ``startup`` stays the same (score-p's craypm plugin).

What the meters here do with that:

* ``node`` (component ``other``) reads ``energy``; its figure per epoch is the node's energy less
  every component measured beside it (``MeterInfo.minus``), so fans, NIC, storage and regulator
  loss are counted once, as ``other``.
* ``cpu_energy`` / ``cpuN_energy``, ``memory_energy`` and ``accelN_energy`` are node shares
  (method ``node-share``): ``backends.discover`` uses them only where a more direct meter (RAPL,
  the GPU's own counter) cannot be read.
* Each read takes ``freshness`` before and after the value and retries while it changes, so a
  value is never one the controller was rewriting; a read that cannot get a steady ``freshness``
  in a few tries is a read error.
* A ``startup`` change means the counters restarted: the meter keeps its cumulative figure going
  from where it was, bridging the restart with the power it last saw, and logs a warning.

Resolution is 1 J and the set refreshes at about 10 Hz, so an epoch's figure is exact to a joule
or two plus up to 0.1 s of power at each edge. Paths resolve under the sysfs root
(``backends.sysfs``, env ``WATTPRINT_SYSFS_ROOT``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from backends import sysfs
from backends.base import (
    EVERY_OTHER_DEVICE,
    Component,
    Found,
    Meter,
    MeterError,
    MeterInfo,
    MeterReadError,
    Method,
    Missing,
    Reading,
    os_meter_error,
)

logger = logging.getLogger(__name__)

MODEL = "HPE Cray EX node (pm_counters)"
UNREADABLE_FIX = (
    "HPE ships cray/pm_counters readable by every user (mode 0444): ask the system's "
    "administrators to restore that; in a container, bind-mount the host's /sys/cray/pm_counters "
    "read-only (e.g. docker run -v /sys/cray:/host/sys/cray:ro) and set "
    f"{sysfs.ROOT_ENV}=/host/sys"
)
_TRIES = 5  # reads of a value between two equal freshness readings (the set refreshes at ~10 Hz)
_RATE_SPAN_S = 0.2  # reads closer than this say nothing of power at 1 J resolution
_SHARE = re.compile(r"(cpu|memory|accel)(\d*)_energy")
_SHARE_COMPONENT: dict[str, tuple[Component, str, str]] = {
    "cpu": ("cpu", "cpu", "CPU socket"),
    "memory": ("dram", "dram", "memory"),
    "accel": ("gpu", "gpu", "accelerator"),
}


def pm_counters_dir() -> Path:
    """``cray/pm_counters`` under the sysfs root."""
    return sysfs.sysfs_path("cray", "pm_counters")


def find_pm_counters() -> Found:
    """The node meter and node-share meters of a Cray EX node; nothing where there is none.

    ``node`` (component ``other``) reads ``energy``; ``cpu``/``cpuN``, ``dram`` and ``gpuN``
    read ``cpu_energy``/``cpuN_energy``, ``memory_energy`` and ``accelN_energy`` (``gpu`` for a
    lone ``accel_energy``); where per-device files exist, the aggregate beside them is not read.
    A file that exists but cannot be read is a ``Missing`` with the fix.
    """
    directory = pm_counters_dir()
    try:
        names = set(sysfs.list_entries(directory))
    except FileNotFoundError:
        return Found()
    except OSError as error:
        reason = f"cannot list {directory}: {error}"
        return Found(missing=[Missing("other", "node", reason, _fix(error))])
    found = Found()
    matches = [match for name in names if (match := _SHARE.fullmatch(name)) is not None]
    numbered = {match[1] for match in matches if match[2]}
    # A kind with per-device files (cpu0_energy, ...) is read from those alone: an aggregate
    # beside them (cpu_energy) holds the same joules, and both would count them twice.
    shares = sorted(
        (match[0], *_share_role(match)) for match in matches if match[2] or match[1] not in numbered
    )
    files = [("energy", "other", "node"), *shares]
    for name, component, device in files:
        if name not in names:
            continue
        opened = _open(directory, name, component, device, names)
        found.add(opened)
    return found


@dataclass(frozen=True, slots=True)
class PmValue:
    """One pm_counters file: its value, unit and the controller's timestamp (µs)."""

    value: int
    unit: str
    timestamp_us: int | None


def parse(path: Path, text: str) -> PmValue:
    """``<value> <unit> <timestamp> us`` (or a bare integer, as ``freshness`` holds).

    Raises ValueError naming the file for anything else.
    """
    parts = text.split()
    if not parts or not parts[0].isdigit():
        raise ValueError(f"{path} holds {text!r}, not '<value> <unit> <timestamp> us'")
    unit = parts[1] if len(parts) > 1 else ""
    stamp = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
    return PmValue(int(parts[0]), unit, stamp)


class PmCounterMeter(Meter):
    """One pm_counters energy file (J), read consistently and carried across controller restarts."""

    fast = True  # four sysfs reads, ~40 us

    def __init__(self, info: MeterInfo, directory: Path, name: str, files: set[str]) -> None:
        self.info = info
        self._path = directory / name
        self._freshness = directory / "freshness" if "freshness" in files else None
        self._startup = directory / "startup" if "startup" in files else None
        self._lock = threading.Lock()  # the sampler and an epoch edge may read at once
        self._started: int | None = None
        self._offset_j = 0.0
        self._last: tuple[float, float] | None = None  # (monotonic s, cumulative J)
        self._rate_w: float | None = None

    def read(self) -> Reading:
        """The node controller's counter in joules, continuous across a ``startup`` change."""
        with self._lock:
            startup, value = self._steady_read()
            t_s = time.monotonic()
            if self._started is None:
                self._started = startup
            elif startup != self._started:
                self._bridge_restart(startup, value, t_s)
            energy_j = value + self._offset_j
            if self._last is None:
                self._last = (t_s, energy_j)
            elif t_s - self._last[0] >= _RATE_SPAN_S:
                self._rate_w = (energy_j - self._last[1]) / (t_s - self._last[0])
                self._last = (t_s, energy_j)
            return Reading(t_s=t_s, energy_j=energy_j)

    def _steady_read(self) -> tuple[int | None, int]:
        """``startup`` and the value, read between two equal ``freshness`` readings."""
        for _ in range(_TRIES):
            before = self._number(self._freshness)
            startup = self._number(self._startup)
            value = self._value()
            if self._number(self._freshness) == before:
                return startup, value
        raise MeterReadError(
            f"{self.info.device}: {self._freshness} changed during each of {_TRIES} reads "
            f"of {self._path}; no consistent value"
        )

    def _bridge_restart(self, startup: int | None, value: int, t_s: float) -> None:
        """Continue the cumulative figure over a controller restart from the last power seen."""
        assert self._last is not None
        last_t_s, last_j = self._last
        bridged_j = last_j + (self._rate_w or 0.0) * (t_s - last_t_s)
        self._offset_j = bridged_j - value
        self._started = startup
        logger.warning(
            "%s: the Cray node controller restarted (%s changed), so its counters restarted; "
            "the %.1f s since the previous read are estimated from the power before it",
            self.info.device,
            self._startup,
            t_s - last_t_s,
        )

    def _value(self) -> int:
        reading = self._parse(self._path)
        if reading.unit != "J":
            raise MeterReadError(f"{self.info.device}: {self._path} is in {reading.unit!r}, not J")
        return reading.value

    def _number(self, path: Path | None) -> int | None:
        return None if path is None else self._parse(path).value

    def _parse(self, path: Path) -> PmValue:
        try:
            return parse(path, sysfs.read_attribute(path))
        except OSError as error:
            raise os_meter_error(self.info.device, "cannot read pm_counters", error) from error
        except ValueError as error:
            raise MeterReadError(f"{self.info.device}: {error}") from error


def _share_role(match: re.Match[str]) -> tuple[Component, str]:
    """``(component, device)`` of a share file: ``cpu_energy`` -> cpu, ``accel2_energy`` -> gpu2."""
    component, device, _ = _SHARE_COMPONENT[match[1]]
    return component, f"{device}{match[2]}"


def _open(
    directory: Path, name: str, component: Component, device: str, files: set[str]
) -> PmCounterMeter | Missing:
    """A meter for one energy file if it reads now, else a ``Missing`` with the fix."""
    path = directory / name
    method: Method
    minus: tuple[str, ...]
    if component == "other":
        scope = "the whole node (accelerators, CPUs, memory, NIC, fans, regulator loss)"
        method, minus = "counter", (EVERY_OTHER_DEVICE,)
    else:
        match = _SHARE.fullmatch(name)
        assert match is not None
        what = _SHARE_COMPONENT[match[1]][2]
        which = f"{what} {match[2]}" if match[2] else f"every {what}"
        scope = f"{which} of the node, as the node controller meters it"
        method, minus = "node-share", ()
    info = MeterInfo(
        device, component, MODEL, method, True, detail=str(path), scope=scope, minus=minus
    )
    meter = PmCounterMeter(info, directory, name, files)
    try:
        meter.read()
    except MeterError as error:  # discovery never raises: every failure is a Missing
        cause = error.__cause__ if isinstance(error.__cause__, OSError) else error
        return Missing(component, device, f"cannot read {path}: {error}", _fix(cause))
    return meter


def _fix(error: BaseException) -> str:
    """The fix for an unreadable pm_counters file: only a permission problem has one."""
    return UNREADABLE_FIX if isinstance(error, PermissionError) else ""
