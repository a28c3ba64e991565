"""DRAM power estimated per installed module, for hosts where RAPL has no DRAM domain.

A module draws background and refresh power whatever the OS has allocated, plus a dynamic part
that follows memory traffic; per gigabyte it has fallen with every generation, since a larger
module holds denser chips on the same bus. So the model counts modules, not gigabytes:

    power = DIMMs x ``DEFAULT_WATTS_PER_DIMM``

The DIMM count is read from the kernel's EDAC memory controllers where they are exposed
(``devices/system/edac/mc/mc*/dimm*`` under the sysfs root, one entry per populated module);
elsewhere it is assumed from the installed memory: one ``TYPICAL_DIMM_GB`` module per 32 GB, at
least one and at most ``MAX_DIMMS`` (two sockets of eight channels with two modules each, the
largest common server board). A 2 TB node so counts 32 modules (96 W), where the 0.3725 W/GB
rule of Green Algorithms gave ~760 W; a measured increase of under 1.5 W for +64 GB is reported
against that rule. The figure is an estimate, labelled as such, and the DRAM of the whole host.
"""

from __future__ import annotations

import math
import re

import psutil

from backends import sysfs
from backends.base import Found, MeterInfo, Missing
from backends.estimate import ConstantPowerMeter, checked_number

__all__ = [
    "DEFAULT_WATTS_PER_DIMM",
    "MAX_DIMMS",
    "TYPICAL_DIMM_GB",
    "MemoryEstimateMeter",
    "dimm_count",
    "find_memory_estimate",
]

DEFAULT_WATTS_PER_DIMM = 3.0
"""Power of one DDR4 module under load, in W: a measured figure, applied per module.

Tom's Hardware measured DDR4-2133 modules under load (Intel Core i7-5960X review, "Measuring
DDR4 Power Consumption", 2014): 2.98 W for one 8 GB module, 5.94 W for two, 11.85 W for four.
That is the measurement behind Green Algorithms' 0.3725 W/GB (2.98 W / 8 GB), which divides it
by the module's size and so grows with capacity; but a module's power follows its chips'
activity and background currents (Micron TN-40-07, "Calculating Memory Power for DDR4 SDRAM"),
not its size, and a user's wall-power test (Green Algorithms issue #14: +64 GB installed, under
1.5 W more) found the per-GB rule far too high. So the measured figure is kept per module, at
load, which leans high for idle or low-power modules; pass ``watts_per_dimm`` where the module's
datasheet says otherwise.
"""

TYPICAL_DIMM_GB = 32
"""Size assumed per module where the count cannot be read, in GB (a common server RDIMM)."""

MAX_DIMMS = 32
"""The most modules assumed where the count cannot be read (2 sockets x 8 channels x 2)."""

_BYTES_PER_GB = 1024**3  # memory is sold in binary gigabytes
_DIMM_ENTRY = re.compile(r"(dimm|rank)\d+")


class MemoryEstimateMeter(ConstantPowerMeter):
    """Host DRAM energy in J since creation: ``power_w`` (DIMMs x W per DIMM) x time."""

    def __init__(self, power_w: float, detail: str) -> None:
        scope = "an estimate of the host's installed DRAM (W per module x modules)"
        info = MeterInfo("dram", "dram", "DRAM", "estimate", True, detail=detail, scope=scope)
        super().__init__(info, power_w)


def dimm_count() -> int | None:
    """The populated modules the EDAC memory controllers list, or None where none are readable.

    Kernels list each module as ``mc*/dimmN`` (older ones as ``mc*/rankN``, one per rank); an
    entry whose ``size`` is 0 is an empty slot.
    """
    root = sysfs.sysfs_path("devices", "system", "edac", "mc")
    count = 0
    try:
        controllers = [c for c in sysfs.list_entries(root) if c.startswith("mc")]
        for controller in controllers:
            for entry in sysfs.list_entries(root / controller):
                if not _DIMM_ENTRY.fullmatch(entry):
                    continue
                size_file = "size" if entry.startswith("dimm") else "dimm_size"
                try:
                    populated = sysfs.read_uint(root / controller / entry / size_file) > 0
                except (OSError, ValueError):
                    populated = True  # listed, size unreadable: a module all the same
                count += populated
    except OSError:
        return None
    return count or None


def find_memory_estimate(watts_per_dimm: float = DEFAULT_WATTS_PER_DIMM) -> Found:
    """One estimating meter for the host's DRAM (device ``dram``): DIMMs x ``watts_per_dimm``.

    The DIMM count comes from ``dimm_count``, else from the installed memory
    (``psutil.virtual_memory().total``) as the module docstring says; where neither can be read,
    a ``Missing`` says why. Raises ``ValueError`` if ``watts_per_dimm`` is not a positive finite
    number.
    """
    watts_per_dimm = checked_number("watts_per_dimm", watts_per_dimm, "W")
    dimms = dimm_count()
    if dimms is not None:
        detail = f"{dimms} DIMMs (EDAC) x {watts_per_dimm:g} W"
    else:
        try:
            total_gb = psutil.virtual_memory().total / _BYTES_PER_GB
        except OSError as exc:
            reason = f"no DRAM estimate: cannot read the memory size: {exc}"
            return Found(missing=[Missing("dram", "dram", reason)])
        dimms = min(max(math.ceil(total_gb / TYPICAL_DIMM_GB - 1e-9), 1), MAX_DIMMS)
        detail = (
            f"{total_gb:.1f} GB installed, assumed {dimms} x {TYPICAL_DIMM_GB} GB DIMMs "
            f"x {watts_per_dimm:g} W"
        )
    return Found(meters=[MemoryEstimateMeter(dimms * watts_per_dimm, detail)])
