"""Discovery of this machine's meters: for each component, the first source that works wins.

GPUs come from NVML (NVIDIA), from amdsmi or amdgpu's hwmon files (AMD) and from the Intel GPU
hwmon counters; a machine may have several. CPU packages and DRAM come from RAPL (powercap files,
or pyRAPL when chosen); where RAPL cannot be read, the labelled estimates take over, and the
reason RAPL failed is kept among the ``missing`` entries so the user learns the fix. A system on
a chip (a Jetson board's INA3221 rails, Apple Silicon's energy model) meters its own GPU, CPU and
DRAM: where it does, no estimate is added for them. An AMD APU's figure is its whole socket's
(``scope=APU``, CPU cores included): the CPU is then left to it, counted once.

A ``Missing`` whose device is the bare component name (``gpu``: "NVML not found") says an
interface is absent altogether; it is dropped where another interface measures that component
or names its devices, so an Intel-only or Jetson host does not read as measured in part, nor
get advice for hardware it does not have.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Literal

from backends.base import COMPONENTS, Component, Found, Missing
from backends.cpu.estimate import find_cpu_estimate
from backends.cpu.pyrapl import find_pyrapl
from backends.cpu.rapl import find_rapl
from backends.gpu.amd import APU_SCOPE, find_amd_gpus
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
        found.extend(find_all_gpus(gpus))
        found.extend(find_intel_gpus())
        _take(found, soc, "gpu")
    if "cpu" not in components and "dram" not in components:
        return _settle_absent(found)
    rapl = find_pyrapl() if rapl_reader == "pyrapl" else find_rapl()
    fallbacks: dict[Component, Callable[[], Found]] = {
        "cpu": find_cpu_estimate,
        "dram": find_memory_estimate,
    }
    apus = [m.info.device for m in found.meters if APU_SCOPE in m.info.detail.split()]
    for component, fallback in fallbacks.items():
        if component not in components:
            continue
        if component == "cpu" and apus:  # an APU's socket figure holds its CPU cores
            reason = f"the CPU cores are counted in the APU socket figure of {', '.join(apus)}"
            found.missing.append(Missing("cpu", "cpu", reason))
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


_GPU_NAME = re.compile(r"gpu(\d+)")
_UUID = re.compile(r"uuid=(\S+)")


def find_all_gpus(gpus: Sequence[int | str] | None = None) -> Found:
    """Every vendor's GPUs: NVIDIA's named ``gpu0``, ``gpu1``, ... first, then AMD's after them.

    On a machine with one vendor's GPUs (nearly all), the names and the indices of ``gpus`` are
    the framework's: CUDA's on NVIDIA, HIP's on AMD. Where both vendors are present, an index
    in ``gpus`` is a name's number (``2`` is ``gpu2``, NVIDIA's counted first) and a ``GPU-``
    UUID (or a unique prefix) picks the GPU that has it. An entry naming no GPU raises
    ``ValueError`` naming ``gpus``. A vendor's "no driver" entry is dropped when the other
    vendor finds GPUs: that machine is simply not the vendor's.
    """
    nvidia = find_gpus(None)
    amd = find_amd_gpus(None, first_index=_next_index(nvidia))
    if not _has_gpus(amd):
        if gpus is None:
            return nvidia
        _close(nvidia)  # opened again below, with NVML's own selection and messages
        return find_gpus(gpus)
    nvidia.missing = [m for m in nvidia.missing if _GPU_NAME.fullmatch(m.device)]
    nvidia.extend(amd)
    if gpus is None:
        return nvidia
    try:
        return _pick(nvidia, gpus)
    except ValueError:
        _close(nvidia)
        raise


def _pick(found: Found, gpus: Sequence[int | str]) -> Found:
    """The GPUs ``gpus`` names among those found (by ``gpuN`` number or UUID); the rest closed."""
    names = [m.info.device for m in found.meters] + [m.device for m in found.missing]
    uuids = {m.info.device: _UUID.findall(m.info.detail.lower()) for m in found.meters}
    picked: list[str] = []
    for item in gpus:
        entry = str(item).strip()
        if entry.isascii() and entry.isdigit():
            matches = [name for name in names if name == f"gpu{int(entry)}"]
        else:
            prefix = entry.lower()
            matches = [d for d, ids in uuids.items() if any(u.startswith(prefix) for u in ids)]
        if len(matches) != 1:
            problem = "names no GPU" if not matches else f"matches {len(matches)} GPUs"
            available = ", ".join(f"{d} ({' '.join(ids) or 'no UUID'})" for d, ids in uuids.items())
            raise ValueError(
                f"gpus: {item!r} {problem}; accepted: a gpuN number or a GPU- UUID of the GPUs "
                f"here: {available}"
            )
        if matches[0] not in picked:
            picked.append(matches[0])
    kept = Found(missing=[m for m in found.missing if m.device in picked], notes=found.notes)
    for meter in found.meters:
        if meter.info.device in picked:
            kept.meters.append(meter)
        else:
            meter.close()
    kept.meters.sort(key=lambda m: picked.index(m.info.device))
    return kept


def _close(found: Found) -> None:
    for meter in found.meters:
        meter.close()


def _has_gpus(found: Found) -> bool:
    """Whether a vendor found GPUs (measured or not), not only that its library is absent."""
    names = [m.info.device for m in found.meters] + [m.device for m in found.missing]
    return any(_GPU_NAME.fullmatch(name) for name in names)


def _next_index(found: Found) -> int:
    """The first ``gpuN`` number that ``found`` leaves free."""
    names = [m.info.device for m in found.meters] + [m.device for m in found.missing]
    numbers = [int(match[1]) for name in names if (match := _GPU_NAME.fullmatch(name))]
    return max(numbers, default=-1) + 1
