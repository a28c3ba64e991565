"""Discovery of this machine's meters: for each component, the first source that works wins.

GPUs come from NVML (NVIDIA) and from amdsmi or amdgpu's hwmon files (AMD); a machine may have
both. CPU packages and DRAM come from RAPL (powercap files, or pyRAPL when chosen); where RAPL
cannot be read, the labelled estimates take over, and the reason RAPL failed is kept among the
``missing`` entries so the user learns the fix. An AMD APU's figure is its whole socket's
(``scope=APU``, CPU cores included): the CPU is then left to it, counted once.
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
        found.extend(find_all_gpus(gpus))
    if "cpu" not in components and "dram" not in components:
        return found
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
        if measured:
            found.meters.extend(measured)
        else:
            found.extend(fallback())
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
