"""Apple Silicon CPU, GPU, Neural Engine and DRAM energy through ``zeus-apple-silicon``.

``zeus_apple_silicon.AppleEnergyMonitor`` reads the "Energy Model" group of macOS's IOReport
framework, without sudo (the package's README, zeus-apple-silicon 1.x).
``get_cumulative_energy()`` returns an ``AppleEnergyMetrics`` whose fields are energy in mJ
counted "from an unspecified point" fixed for the monitor's lifetime, or None where the chip
does not report one. That cumulative form is used, not ``begin_window``/``end_window``: it is a
counter like RAPL's, so every epoch edge is exact and no window has to be kept open.

What is read, as which device:

* ``cpu0`` (cpu): ``cpu_total_mj``, every CPU cluster.
* ``gpu0`` (gpu): ``gpu_mj``. ``gpu_sram_mj`` is not added: whether ``gpu_mj`` already holds
  it is not documented, and adding it could count it twice.
* ``ane0`` (gpu): ``ane_mj``, the Neural Engine. The ``gpu`` component holds every accelerator
  a model runs on, so Core ML work on the ANE is counted with the GPU's, as its own device.
* ``dram0`` (dram): ``dram_mj``.

These are model-based figures: the package says they are believed to be the SoC's own
estimates, not sensor readings (resolution 1 mJ). Their method is ``counter`` (how they are
read) and their detail says "model-based (IOReport energy model)", which ``devices.csv``,
``run.json`` and ``wattprint devices`` show. No wraparound is documented; a counter that goes
back is handled by the sampler as a reset. Meters are host-level: the figures cover the chip.

Without the package (``pip install 'wattprint[apple]'``) each component gets a ``Missing`` with
that fix, and CPU and DRAM fall back to the estimates, as they do where the chip reports no CPU
or DRAM figure. One monitor serves the four meters and
its calls are serialised, since the library does not say it is thread-safe.
"""

from __future__ import annotations

import importlib
import math
import sys
import threading
import time
from typing import Any

from backends.base import (
    Component,
    Found,
    Meter,
    MeterInfo,
    MeterReadError,
    Missing,
    Reading,
)

PACKAGE = "zeus_apple_silicon"
INSTALL_FIX = "pip install 'wattprint[apple]' (installs zeus-apple-silicon; no sudo needed)"
DETAIL = "model-based (IOReport energy model, via zeus-apple-silicon)"

FIELDS: tuple[tuple[str, Component, str, str], ...] = (
    ("cpu0", "cpu", "cpu_total_mj", "Apple Silicon CPU"),
    ("gpu0", "gpu", "gpu_mj", "Apple Silicon GPU"),
    ("ane0", "gpu", "ane_mj", "Apple Neural Engine"),
    ("dram0", "dram", "dram_mj", "Apple Silicon DRAM"),
)
"""Each device read: its name, component, ``AppleEnergyMetrics`` field (mJ) and model."""


def find_apple_silicon() -> Found:
    """Meters for the chip's CPU, GPU, ANE and DRAM on macOS; nothing on other systems.

    A missing package, a monitor that cannot start or a field the chip does not report becomes
    a ``Missing``; discovery never raises.
    """
    if sys.platform != "darwin":
        return Found()
    components: tuple[Component, ...] = ("gpu", "cpu", "dram")
    try:
        module = importlib.import_module(PACKAGE)
    except ImportError as exc:
        reason = f"Apple Silicon energy needs zeus-apple-silicon ({exc})"
        return Found(missing=[Missing(c, c, reason, INSTALL_FIX) for c in components])
    except Exception as exc:  # a broken install (its native part fails to load)
        reason = f"zeus-apple-silicon failed to load: {exc!r}"
        fix = "reinstall it: pip install --force-reinstall 'wattprint[apple]'"
        return Found(missing=[Missing(c, c, reason, fix) for c in components])
    try:
        monitor = _Monitor(module.AppleEnergyMonitor())
        metrics = monitor.metrics()
    except Exception as exc:  # whatever the library raises, discovery goes on
        reason = f"zeus-apple-silicon could not read the energy model: {exc!r}"
        return Found(missing=[Missing(c, c, reason) for c in components])
    found = Found()
    for device, component, field, model in FIELDS:
        if getattr(metrics, field, None) is None:
            reason = f"zeus-apple-silicon reports no {field} on this chip"
            # CPU and DRAM have estimates to stand in: the bare component name lets them
            name = device if component == "gpu" else component
            found.missing.append(Missing(component, name, reason))
            continue
        info = MeterInfo(device, component, model, "counter", host_level=True, detail=DETAIL)
        found.meters.append(AppleSiliconMeter(info, monitor, field))
    return found


class _Monitor:
    """One ``AppleEnergyMonitor`` shared by the meters, one call at a time."""

    def __init__(self, monitor: Any) -> None:
        self._monitor = monitor
        self._lock = threading.Lock()

    def metrics(self) -> Any:
        """The cumulative ``AppleEnergyMetrics`` now."""
        with self._lock:
            return self._monitor.get_cumulative_energy()


class AppleSiliconMeter(Meter):
    """One field of the energy model's cumulative counters, in joules."""

    fast = True  # one IOReport sample, about a millisecond; slower reads are kept off edges

    def __init__(self, info: MeterInfo, monitor: _Monitor, field: str) -> None:
        self.info = info
        self._monitor = monitor
        self._field = field

    def read(self) -> Reading:
        """The field's energy since the monitor's fixed origin (mJ), in joules."""
        started_s = time.monotonic()
        try:
            value = getattr(self._monitor.metrics(), self._field)
        except Exception as exc:
            raise MeterReadError(f"{self.info.device}: zeus-apple-silicon failed: {exc!r}") from exc
        t_s = (started_s + time.monotonic()) / 2  # the sample is taken somewhere in the call
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and value >= 0):
            raise MeterReadError(f"{self.info.device}: {self._field} is {value!r}, not mJ")
        return Reading(t_s=t_s, energy_j=value / 1000.0)
