"""DRAM power estimated from installed memory size, for hosts where RAPL has no DRAM domain.

The estimate counts the host's total installed memory, not the part in use. DRAM draws refresh and
background power for every installed module whatever the OS has allocated, and the meter this
replaces (the RAPL DRAM domain) measures all modules of the host; counting "used" memory instead
would make the figure follow page-cache policy and other processes. This is also how CodeCarbon
sizes RAM power when it tracks a whole machine. The power is constant for a run, reported as energy
integrated over time (see ``backends.estimate``).
"""

from __future__ import annotations

import psutil

from backends.base import Found, MeterInfo, Missing
from backends.estimate import ConstantPowerMeter, checked_number

__all__ = ["DEFAULT_WATTS_PER_GB", "MemoryEstimateMeter", "find_memory_estimate"]

DEFAULT_WATTS_PER_GB = 0.3725
"""Power per GB of installed DRAM, in W/GB.

From Green Algorithms: Lannelongue, Grealey and Inouye, "Green Algorithms: Quantifying the Carbon
Footprint of Computation", Advanced Science 8, 2100707 (2021), which derives 0.3725 W/GB from
measured DIMM power. CodeCarbon's older 3 W per 8 GB (0.375 W/GB) agrees to within 1%. Modern
DDR4/DDR5 server modules draw less per GB, so this leans high for large-memory hosts.
"""

_BYTES_PER_GB = 1024**3  # memory is sold in binary gigabytes


class MemoryEstimateMeter(ConstantPowerMeter):
    """Host DRAM energy in J since creation: ``power_w`` (watts_per_gb x installed GB) x time."""

    def __init__(self, power_w: float, detail: str) -> None:
        scope = "an estimate of the host's installed DRAM (W per GB x GB)"
        info = MeterInfo("dram", "dram", "DRAM", "estimate", True, detail=detail, scope=scope)
        super().__init__(info, power_w)


def find_memory_estimate(watts_per_gb: float = DEFAULT_WATTS_PER_GB) -> Found:
    """One estimating meter for the host's DRAM (device ``dram``).

    Power is ``watts_per_gb`` times the total installed memory in GB (2^30 bytes), from
    ``psutil.virtual_memory().total`` read now; where it cannot be read, a ``Missing`` says why.
    Raises ``ValueError`` if ``watts_per_gb`` is not a positive finite number.
    """
    watts_per_gb = checked_number("watts_per_gb", watts_per_gb, "W/GB")
    try:
        total_gb = psutil.virtual_memory().total / _BYTES_PER_GB
    except OSError as exc:
        reason = f"no DRAM estimate: cannot read the memory size: {exc}"
        return Found(missing=[Missing("dram", "dram", reason)])
    power_w = watts_per_gb * total_gb
    detail = f"{total_gb:.1f} GB installed x {watts_per_gb:g} W/GB"
    return Found(meters=[MemoryEstimateMeter(power_w, detail)])
