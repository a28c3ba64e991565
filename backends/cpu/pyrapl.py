"""CPU package and DRAM energy read through the optional pyRAPL package, an alternative reader.

pyRAPL (``pip install 'wattprint[pyrapl]'``) reads the same powercap ``energy_uj`` files as
``backends.cpu.rapl``; its meters carry the same device names, method and semantics (a raw counter
in joules that wraps), and differ only in ``detail``. The pyRAPL 0.2.3 API used here:

* ``pyRAPL.Device.PKG`` (0) and ``pyRAPL.Device.DRAM`` (1);
* ``pyRAPL.Sensor(devices=None, socket_ids=None)``, which opens the counter files of the given
  devices (all it finds when None; then a device it cannot open is left out) on the given
  sockets (all when None), and raises a ``pyRAPL.PyRAPLException`` subclass when it cannot;
* ``Sensor.energy()``: a flat list ``[pkg socket 0, dram socket 0, pkg socket 1, ...]`` of
  counter values in micro-joules, -1 where a device or socket is not monitored.

A whole-machine ``Sensor()`` leaves DRAM out on every socket when it cannot open it on one, so
each socket's DRAM that the powercap tree shows is opened on its own: one DRAM zone that fails
does not hide the others, and is reported with pyRAPL's error rather than as absent.

pyRAPL does not report a counter's range, so ``wrap_j`` comes from ``max_energy_range_uj`` of the
matching zone in the powercap tree (``backends.cpu.rapl.powercap_root``); where there is none it is
None, and the sampler treats a counter that goes backwards as a reset. ``max_power_w`` comes from
the same zone's constraints, as for the powercap reader.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backends.base import Found, MeterReadError, MeterUnavailable, Missing, os_meter_error
from backends.cpu.cpuinfo import cpu_info
from backends.cpu.rapl import (
    RAPL_COMPONENTS,
    RaplMeter,
    list_zones,
    max_power_w,
    permission_fix,
    powercap_root,
    rapl_info,
)
from backends.sysfs import read_uint

PIP_FIX = "pip install 'wattprint[pyrapl]'"

_PYRAPL_ROOT = "/sys/class/powercap"  # where pyRAPL 0.2.3 reads, whatever the environment says


def find_pyrapl() -> Found:
    """Meters for each socket's package and DRAM energy through pyRAPL, and what is missing.

    Never raises: pyRAPL not installed, or failing at setup, becomes a ``Missing``.
    """
    try:
        import pyRAPL
    except ImportError:
        return _missing_all("pyRAPL is not installed", PIP_FIX)
    errors = (pyRAPL.PyRAPLException, OSError, ValueError, IndexError)
    try:
        survey = [float(value) for value in pyRAPL.Sensor().energy()]
    except PermissionError as exc:
        reason = f"pyRAPL cannot read {exc.filename}: root only (Linux 5.10+, CVE-2020-8694)"
        return _missing_all(reason, permission_fix(_PYRAPL_ROOT))
    except errors as exc:
        return _missing_all(f"pyRAPL found no RAPL counters: {exc!r}", "")

    found = Found()
    limits = _zone_limits()
    model = cpu_info().model
    source = f"pyRAPL {getattr(pyRAPL, '__version__', '')}".rstrip()
    for socket in range(len(survey) // 2):
        if survey[2 * socket] < 0:
            continue  # no such socket on this machine
        for number, component in enumerate(RAPL_COMPONENTS):
            device = pyRAPL.Device(number)
            index = 2 * socket + int(device)
            name = f"{component}{socket}"
            # On a present socket only DRAM can be -1: absent, or just one socket's DRAM that
            # pyRAPL could not open, which makes a whole-machine Sensor drop DRAM everywhere.
            if survey[index] < 0 and name not in limits:
                found.missing.append(Missing(component, name, "no DRAM RAPL zone on this CPU", ""))
                continue
            try:
                sensor = pyRAPL.Sensor(devices=[device], socket_ids=[socket])
            except errors as exc:
                found.missing.append(Missing(component, name, f"pyRAPL cannot open it: {exc!r}"))
                continue
            zone_name = f"package-{socket}" if component == "cpu" else "dram"
            detail = f"{source} Sensor, socket {socket} {device.name}"
            info = rapl_info(name, component, zone_name, model, detail)
            reader = _sensor_reader(sensor, index, name, errors)
            found.meters.append(RaplMeter(info, reader, *limits.get(name, (None, None))))
    return found


def _sensor_reader(
    sensor: Any, index: int, device: str, errors: tuple[type[BaseException], ...]
) -> Callable[[], float]:
    """A reader for one value of ``sensor.energy()`` that turns every failure into a MeterError.

    An ``OSError`` from the counter file is mapped by its errno (``os_meter_error``); pyRAPL's own
    errors and a value that is not a number are read errors; -1 (pyRAPL no longer monitors the
    device) means it is unavailable.
    """

    def read_uj() -> float:
        try:
            value = float(sensor.energy()[index])
        except OSError as exc:
            raise os_meter_error(device, "pyRAPL cannot read its counter", exc) from exc
        except errors as exc:
            raise MeterReadError(f"{device}: pyRAPL cannot read its counter: {exc!r}") from exc
        if value < 0:
            raise MeterUnavailable(f"{device}: pyRAPL no longer reads it (it returned {value:g})")
        return value

    return read_uj


def _zone_limits() -> dict[str, tuple[float | None, float | None]]:
    """Each device's ``(wrap_j, max_power_w)`` from the powercap tree, None where unreadable."""
    limits: dict[str, tuple[float | None, float | None]] = {}
    for zone in list_zones(powercap_root()):
        try:
            wrap_j: float | None = read_uint(zone.range_path) / 1e6
        except (OSError, ValueError):
            wrap_j = None
        limits[zone.device] = (wrap_j, max_power_w(zone.path))
    return limits


def _missing_all(reason: str, fix: str) -> Found:
    """Package and DRAM both unmeasured, for one reason."""
    return Found(
        missing=[Missing(component, component, reason, fix) for component in RAPL_COMPONENTS]
    )
