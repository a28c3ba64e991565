"""Discovery of this machine's meters: for each component, the first source that works wins.

GPUs come from NVML and from the Intel GPU hwmon counters. CPU packages and DRAM come from RAPL
(powercap files, or pyRAPL when chosen); where RAPL cannot be read, the labelled estimates take
over, and the reason RAPL failed is kept among the ``missing`` entries so the user learns the fix.
A system on a chip (a Jetson board's INA3221 rails, Apple Silicon's energy model) meters its
own GPU, CPU and DRAM: where it does, no estimate is added for them.

A ``Missing`` whose device is the bare component name (``gpu``: "NVML not found") says an
interface is absent altogether; it is dropped where another interface measures that component
or names its devices, so an Intel-only or Jetson host does not read as measured in part, nor
get advice for hardware it does not have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

from backends.base import COMPONENTS, Component, Found
from backends.cpu.estimate import find_cpu_estimate
from backends.cpu.pyrapl import find_pyrapl
from backends.cpu.rapl import find_rapl
from backends.gpu.intel import find_intel_gpus
from backends.gpu.nvidia import find_gpus
from backends.memory.estimate import find_memory_estimate
from backends.soc.apple import find_apple_silicon
from backends.soc.jetson import find_jetson

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
    soc = _soc()
    found.notes.extend(soc.notes)
    if "gpu" in components:
        found.extend(find_gpus(gpus))
        found.extend(find_intel_gpus())
        _take(found, soc, "gpu")
    if "cpu" not in components and "dram" not in components:
        return _settle_absent(found)
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
        found.meters.extend(measured)
        if not measured and not _take(found, soc, component):
            found.extend(fallback())
    return _settle_absent(found)


def _soc() -> Found:
    """A system on a chip's own meters: a Jetson's rails, Apple Silicon's energy model."""
    found = find_jetson()
    found.extend(find_apple_silicon())
    return found


def _take(found: Found, soc: Found, component: Component) -> bool:
    """Move ``soc``'s entries for ``component`` into ``found``; whether it accounts for it.

    It does with a meter, or with a ``Missing`` for a named device (a Jetson's CPU counted in
    the combined CPU+GPU rail): then no estimate may be added, or its joules would count twice.
    """
    meters = [m for m in soc.meters if m.info.component == component]
    missing = [m for m in soc.missing if m.component == component]
    found.meters.extend(meters)
    found.missing.extend(missing)
    return bool(meters) or any(m.device != m.component for m in missing)


def _settle_absent(found: Found) -> Found:
    """Drop "interface absent" entries for components another interface speaks for.

    It does with a meter (not an estimate) or a ``Missing`` that names a device of its own.
    """
    spoken = {m.info.component for m in found.meters if m.info.method != "estimate"}
    spoken |= {m.component for m in found.missing if m.device != m.component}
    found.missing = [
        m for m in found.missing if not (m.device == m.component and m.component in spoken)
    ]
    return found
