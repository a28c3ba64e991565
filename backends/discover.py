"""Discovery of this machine's meters: for each component, the first source that works wins.

GPUs come from NVML. CPU packages and DRAM come from RAPL (powercap files, or pyRAPL when chosen);
where RAPL cannot be read, the labelled estimates take over, and the reason RAPL failed is kept
among the ``missing`` entries so the user learns the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from backends.base import COMPONENTS, Component, Found
from backends.cpu.estimate import find_cpu_estimate
from backends.cpu.pyrapl import find_pyrapl
from backends.cpu.rapl import find_rapl
from backends.gpu.nvidia import find_gpus
from backends.memory.estimate import find_memory_estimate

RaplReader = Literal["powercap", "pyrapl"]
RAPL_READERS: tuple[RaplReader, ...] = ("powercap", "pyrapl")


def discover(
    components: Sequence[Component] = COMPONENTS,
    *,
    gpus: Sequence[int | str] | None = None,
    rapl_reader: RaplReader = "powercap",
) -> Found:
    """Meters for the requested components, and what could not be measured with its fix."""
    found = Found()
    if "gpu" in components:
        found.extend(find_gpus(gpus))
    if "cpu" not in components and "dram" not in components:
        return found
    rapl = find_pyrapl() if rapl_reader == "pyrapl" else find_rapl()
    fallbacks: dict[Component, Callable[[], Found]] = {
        "cpu": find_cpu_estimate,
        "dram": find_memory_estimate,
    }
    for component, fallback in fallbacks.items():
        if component not in components:
            continue
        found.missing.extend(m for m in rapl.missing if m.component == component)
        measured = [m for m in rapl.meters if m.info.component == component]
        if measured:
            found.meters.extend(measured)
        else:
            found.extend(fallback())
    return found
