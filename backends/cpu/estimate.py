"""CPU energy estimated as TDP x utilisation, for hosts where RAPL cannot be read.

The estimate covers the whole machine's CPU use, not this process's: it stands in for the RAPL
package counter, which measures every process on the host, and it is a host-level meter read by
one rank per host. It is a counter (see ``backends.estimate``): TDP x the busy CPU-seconds of the
machine since the meter was created / the number of logical CPUs, i.e. TDP x utilisation
integrated over time. Busy time comes from ``psutil.cpu_times()`` (``/proc/stat`` on Linux),
which is machine-wide and the same on every thread, so every interval, the first included, gets
exactly the utilisation of that interval.

Busy CPU time on Linux is ``user + nice + system + irq + softirq``. Not busy: ``idle`` and
``iowait`` (the CPU waited); ``guest`` and ``guest_nice`` (the kernel already counts them inside
``user`` and ``nice``; adding them would count a VM's time twice); ``steal`` (in a VM, time the
hypervisor gave this virtual CPU's physical CPU to someone else: that power is theirs, and the
virtual CPU did no work). On other systems every psutil field but ``idle`` counts as busy.
"""

from __future__ import annotations

import psutil

from backends.base import Found, MeterError, MeterInfo, MeterReadError, Missing, os_meter_error
from backends.cpu.cpuinfo import cpu_info
from backends.estimate import EstimateMeter, checked_number, checked_share
from backends.specs import cpu_tdp_w

__all__ = ["DEFAULT_CPU_TDP_W", "CpuEstimateMeter", "find_cpu_estimate"]

DEFAULT_CPU_TDP_W = 85.0
"""TDP assumed per CPU package when the model is not in the table.

85 W is the constant CodeCarbon falls back on for an unknown CPU (``POWER_CONSTANT`` in
``codecarbon/external/hardware.py``, MIT licence); it sits mid-way between desktop parts
(65-125 W) and is low for current server parts (Xeon Platinum 8480+ 350 W, EPYC 9654 360 W),
so the meter says plainly when it is used and ``tdp_w`` should be given where the TDP is known.
"""

_NOT_BUSY = frozenset({"idle", "iowait", "steal", "guest", "guest_nice"})


class CpuEstimateMeter(EstimateMeter):
    """Whole-host CPU energy in J since creation: ``tdp_w`` x utilisation x time.

    ``utilisation`` (0..1) fixes the utilisation; None measures it from the machine's busy
    CPU-seconds. ``tdp_w`` is also ``max_power_w``: the estimate never shows more. Raises
    ``MeterError`` when the CPU times cannot be read at creation.
    """

    def __init__(self, tdp_w: float, model: str, detail: str, utilisation: float | None) -> None:
        scope = "an estimate of every CPU package of the host (TDP x utilisation)"
        info = MeterInfo("cpu", "cpu", model, "estimate", True, detail=detail, scope=scope)
        super().__init__(info, max_power_w=tdp_w)
        self.tdp_w = tdp_w
        self.utilisation = utilisation
        measured = utilisation is None
        self._cpus = _logical_cpus() if measured else 1
        self._start_busy_s = busy_cpu_s() if measured else 0.0

    def model_j(self, t_s: float) -> float:
        """TDP x the utilisation given, or measured from busy CPU-seconds, since creation."""
        if self.utilisation is not None:
            return self.tdp_w * self.utilisation * (t_s - self.start_s)
        return self.tdp_w * (busy_cpu_s() - self._start_busy_s) / self._cpus


def busy_cpu_s() -> float:
    """CPU-seconds the machine has spent busy, summed over its logical CPUs (see the module).

    Raises a ``MeterError`` naming the ``cpu`` estimate when psutil cannot read the CPU times:
    by the errno of an ``OSError`` (``os_meter_error``), ``MeterReadError`` for text psutil
    cannot parse.
    """
    try:
        times = psutil.cpu_times()._asdict()
    except OSError as exc:
        raise os_meter_error("cpu", "cannot read the CPU times", exc) from exc
    except ValueError as exc:
        raise MeterReadError(f"cpu: cannot read the CPU times: {exc}") from exc
    return float(sum(seconds for name, seconds in times.items() if name not in _NOT_BUSY))


def _logical_cpus() -> int:
    """The number of logical CPUs; raises ``MeterReadError`` where psutil cannot tell."""
    count = psutil.cpu_count(logical=True)
    if not count:
        raise MeterReadError("cpu: psutil cannot count the logical CPUs")
    return count


def find_cpu_estimate(tdp_w: float | None = None, utilisation: float | None = None) -> Found:
    """One estimating meter for the host's CPUs (device ``cpu``), or why there is none.

    ``tdp_w`` is the total TDP of the host's CPU packages in watts; by default it is the table TDP
    of the CPU model (``/proc/cpuinfo`` "model name", else ``platform.processor()``) times the
    number of sockets, or ``DEFAULT_CPU_TDP_W`` per socket when the model is unknown, which
    ``info.detail`` then says. ``utilisation`` (0..1) fixes the utilisation instead of measuring
    it. Both map to carbontracker's ``sim_cpu_tdp`` and ``sim_cpu_util``. Raises ``ValueError``
    naming the argument when an override is out of range.
    """
    if tdp_w is not None:
        tdp_w = checked_number("tdp_w", tdp_w, "W")
    if utilisation is not None:
        utilisation = checked_share("utilisation", utilisation)
    cpus = cpu_info()
    model, sockets = cpus.name, cpus.sockets
    per_socket = "" if sockets == 1 else f" x {sockets} sockets"
    if tdp_w is not None:
        total_w, detail = tdp_w, f"TDP {tdp_w:g} W given"
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
        detail += " x machine-wide CPU utilisation"
    else:
        detail += f" x utilisation {utilisation:g} (given)"
    try:
        meter = CpuEstimateMeter(total_w, model, detail, utilisation)
    except MeterError as exc:
        return Found(missing=[Missing("cpu", "cpu", f"no CPU estimate: {exc}")])
    return Found(meters=[meter])
