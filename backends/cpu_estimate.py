"""CPU power estimated as TDP x utilisation, for hosts where RAPL cannot be read.

The estimate covers the whole machine's CPU utilisation, not this process's: it stands in for the
RAPL package counter, which measures every process on the host, and it is a host-level meter read
by one rank per host. ``psutil.cpu_percent(interval=None)`` is machine-wide and non-blocking; it
reports the busy share since its previous call, so each read covers the interval since the last
read (the first call, made at discovery, only primes it). Another caller of ``cpu_percent`` in the
same process shortens that window; the average stays right, only its time span changes.
"""

from __future__ import annotations

import math
import platform
import time
from pathlib import Path

import psutil

from backends.base import Found, Meter, MeterInfo, Reading
from backends.specs import cpu_tdp_w

__all__ = ["DEFAULT_CPU_TDP_W", "CpuEstimateMeter", "find_cpu_estimate"]

DEFAULT_CPU_TDP_W = 85.0
"""TDP assumed per CPU package when the model is not in the table.

85 W is the constant CodeCarbon falls back on for an unknown CPU (``POWER_CONSTANT`` in
``codecarbon/external/hardware.py``, MIT licence); it sits mid-way between desktop parts
(65-125 W) and is low for current server parts (Xeon Platinum 8480+ 350 W, EPYC 9654 360 W),
so the meter says plainly when it is used and ``tdp_w`` should be given where the TDP is known.
"""

CPUINFO_PATH = Path("/proc/cpuinfo")
"""Where the CPU model name and socket count are read on Linux."""


class CpuEstimateMeter(Meter):
    """Whole-host CPU power as ``tdp_w x utilisation``; read by the sampler thread only."""

    fast = False  # an estimate gains nothing from a read on the training thread

    def __init__(self, tdp_w: float, model: str, detail: str, utilisation: float | None) -> None:
        self.tdp_w = tdp_w
        self.utilisation = utilisation
        self.info = MeterInfo(
            device="cpu",
            component="cpu",
            model=model,
            method="estimate",
            host_level=True,
            detail=detail,
        )

    def read(self) -> Reading:
        """Estimated power now: TDP x the machine's CPU utilisation since the previous read."""
        if self.utilisation is not None:
            share = self.utilisation
        else:
            share = min(max(psutil.cpu_percent(interval=None) / 100.0, 0.0), 1.0)
        return Reading(t_s=time.monotonic(), power_w=self.tdp_w * share)


def find_cpu_estimate(tdp_w: float | None = None, utilisation: float | None = None) -> Found:
    """One estimating meter for the host's CPUs (device ``cpu``).

    ``tdp_w`` is the total TDP of the host's CPU packages in watts; by default it is the table TDP
    of the CPU model (``/proc/cpuinfo`` "model name", else ``platform.processor()``) times the
    number of sockets, or ``DEFAULT_CPU_TDP_W`` per socket when the model is unknown, which
    ``info.detail`` then says. ``utilisation`` (0..1) fixes the utilisation instead of measuring
    it. Both map to carbontracker's ``sim_cpu_tdp`` and ``sim_cpu_util``. Raises ``ValueError``
    naming the argument when an override is out of range.
    """
    if tdp_w is not None and not (tdp_w > 0 and math.isfinite(tdp_w)):
        raise ValueError(f"tdp_w must be a positive number of watts, got {tdp_w!r}")
    if utilisation is not None and not 0.0 <= utilisation <= 1.0:
        raise ValueError(f"utilisation must be between 0 and 1, got {utilisation!r}")
    model, sockets = _cpu_model_and_sockets()
    per_socket = "" if sockets == 1 else f" x {sockets} sockets"
    if tdp_w is not None:
        total_w, detail = float(tdp_w), f"TDP {tdp_w:g} W given"
    else:
        match = cpu_tdp_w(model)
        if match is None:
            total_w = DEFAULT_CPU_TDP_W * sockets
            detail = f"TDP unknown for {model}, assumed {total_w:g} W"
            if sockets > 1:
                detail += f" ({DEFAULT_CPU_TDP_W:g} W{per_socket})"
        else:
            total_w = match[0] * sockets
            detail = f"TDP {match[0]:g} W ({match[1]}){per_socket}"
    if utilisation is None:
        psutil.cpu_percent(interval=None)  # prime: the next call reports from here
        detail += " x machine-wide CPU utilisation"
    else:
        detail += f" x utilisation {utilisation:g} (given)"
    meter = CpuEstimateMeter(total_w, model, detail, utilisation)
    return Found(meters=[meter])


def _cpu_model_and_sockets() -> tuple[str, int]:
    """The CPU model name and the number of CPU packages, read now (not at import)."""
    try:
        text = CPUINFO_PATH.read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    model = ""
    sockets: set[str] = set()
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip(), value.strip()
        if key == "model name" and not model:
            model = value
        elif key == "physical id":
            sockets.add(value)
    model = model or platform.processor() or "unknown CPU"
    return model, max(len(sockets), 1)
