"""What ``/proc/cpuinfo`` says about this machine's CPUs: the model name and how many packages.

The one parser of that file for every CPU meter: RAPL names its zones' model with it, the CPU
estimate looks up the model's TDP and multiplies by the number of packages.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CPUINFO_PATH", "CpuInfo", "cpu_info"]

CPUINFO_PATH = Path("/proc/cpuinfo")
"""Where the CPU model name and the packages' ``physical id`` are read (Linux)."""


@dataclass(frozen=True, slots=True)
class CpuInfo:
    """The CPU ``model`` name ('' where the file states none) and ``sockets``, at least 1."""

    model: str
    sockets: int

    @property
    def name(self) -> str:
        """The model, else ``platform.processor()`` (not Linux), else "unknown CPU"."""
        return self.model or platform.processor() or "unknown CPU"


def cpu_info() -> CpuInfo:
    """The first "model name" and the number of distinct "physical id" values, read now.

    Read at each call, never at import. A file that cannot be read (not Linux, a locked-down
    container) gives ``CpuInfo("", 1)``.
    """
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
    return CpuInfo(model, max(len(sockets), 1))
