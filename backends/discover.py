"""Discovery of this machine's meters: for each device, the most direct source that works wins.

GPUs come from NVML (NVIDIA), from amdsmi or amdgpu's hwmon files (AMD) and from the Intel GPU
hwmon counters; a machine may have several. CPU packages and DRAM come from RAPL (powercap files,
or pyRAPL when chosen); where RAPL cannot be read, the node's shares or the labelled estimates
take over, and the reason RAPL failed is kept among the ``missing`` entries so the user learns the
fix. A system on a chip (a Jetson board's INA3221 rails, Apple Silicon's energy model) meters its
own GPU, CPU and DRAM: where it does, no estimate is added for them. An AMD APU's figure is its
whole socket's (``scope=APU``, CPU cores included): the CPU is then left to it, counted once.

A ``Missing`` whose device is the bare component name (``gpu``: "NVML not found") says an
interface is absent altogether; it is dropped where another interface measures that component
or names its devices, so an Intel-only or Jetson host does not read as measured in part, nor
get advice for hardware it does not have.

Whole-node meters (``backends.node``: HPE Cray EX ``pm_counters``, NVIDIA Grace/GH200 power
meters) add a fourth component, ``other``, and node shares of the components. Precedence, so that
each joule is counted once:

1. Per device the most direct meter wins: an energy counter (NVML's, RAPL) over a node share
   (Cray ``cpu_energy``, ``memory_energy``, ``accelN_energy``) over power polling (NVML power,
   Grace hwmon) over an estimate. A node share stands in for a component only where no direct
   meter reads any of its devices, so a share never overlaps a direct meter.
2. Cray ``accelN_energy`` is the accelerator with NVML index N (both number the node's devices in
   PCI bus order); it replaces a GPU that NVML reads by power polling only, or cannot read at all
   (then only while ``CUDA_VISIBLE_DEVICES`` is unset, as NVML's index is unknown).
3. A GH200 module (NVML's counter, else the hwmon Module meter) contains its Grace socket: the
   GPU's figure is the module's less ``cpuN`` (``MeterInfo.minus``). On a Grace node the Grace
   socket figure contains its LPDDR5X, so DRAM is not metered nor estimated apart.
4. A whole-node meter (Cray ``energy``) is ``other``: the node's energy less every component
   measured beside it, never below 0 (``tracker.measure.epochs``).
5. ``other`` is left out where the run measures fewer GPUs than the node meters accelerators
   (``gpus``, ``CUDA_VISIBLE_DEVICES``): the rest would hold the GPUs left out.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Sequence
from typing import Literal

from backends.base import COMPONENTS, Component, Found, Meter, Missing
from backends.cpu.estimate import find_cpu_estimate
from backends.cpu.pyrapl import find_pyrapl
from backends.cpu.rapl import find_rapl
from backends.gpu.amd import APU_SCOPE, find_amd_gpus
from backends.gpu.intel import find_intel_gpus
from backends.gpu.nvidia import MIG_REASON, NvmlMeter, find_gpus, module_scoped
from backends.memory.estimate import find_memory_estimate
from backends.node.cray import find_pm_counters
from backends.node.grace import find_grace
from backends.soc.apple import find_apple_silicon
from backends.soc.jetson import find_jetson

RaplReader = Literal["powercap", "pyrapl"]
RAPL_READERS: tuple[RaplReader, ...] = ("powercap", "pyrapl")

METHOD_RANK = {"counter": 0, "rapl": 0, "node-share": 1, "power": 2, "estimate": 3}
"""Precedence of methods for one device: lower wins (an energy counter over a node share ...)."""
GRACE_REASON = "part of a GH200 module or Grace socket figure, which covers its CPU and memory"


def discover(
    components: Sequence[Component] = COMPONENTS,
    *,
    gpus: Sequence[int | str] | None = None,
    rapl_reader: RaplReader = "powercap",
) -> Found:
    """Meters for the requested components, and what could not be measured with its fix."""
    node = find_pm_counters()
    node.extend(find_grace())
    accelerators = len([m for m in node.meters if m.info.component == "gpu"])
    accelerators += len([m for m in node.missing if m.component == "gpu"])
    soc = _soc()
    found = Found(notes=list(soc.notes))
    if "gpu" in components:
        found.extend(find_all_gpus(gpus))
        found.extend(find_intel_gpus())
        _take(found, soc, "gpu")
        _node_gpus(found, node, gpus)
    if "cpu" in components or "dram" in components:
        _host_components(found, node, soc, components, rapl_reader)
    _within_modules(found)
    if "other" in components:
        _rest_of_node(found, node, components, accelerators)
    for meter in node.meters:
        if meter not in found.meters:
            meter.close()
    return _settle_absent(found)


def _host_components(
    found: Found,
    node: Found,
    soc: Found,
    components: Sequence[Component],
    rapl_reader: RaplReader,
) -> None:
    """CPU and DRAM: RAPL, else the node's shares (Cray, Grace), else a SoC's, else estimates.

    Where a GH200 module figure (which holds the Grace socket and its memory) stands for a GPU,
    a Grace socket figure for a CPU, or an AMD APU's socket figure for its CPU cores, what they
    contain is said so instead of estimated.
    """
    rapl = find_pyrapl() if rapl_reader == "pyrapl" else find_rapl()
    fallbacks: dict[Component, Callable[[], Found]] = {
        "cpu": find_cpu_estimate,
        "dram": find_memory_estimate,
    }
    modules = [m.info.device for m in found.meters if module_scoped(m.info.model)]
    apus = [m.info.device for m in found.meters if APU_SCOPE in m.info.detail.split()]
    for component, fallback in fallbacks.items():
        if component not in components:
            continue
        if component == "cpu" and apus:  # an APU's socket figure holds its CPU cores
            reason = f"the CPU cores are counted in the APU socket figure of {', '.join(apus)}"
            found.missing.append(Missing("cpu", "cpu", reason))
            continue
        measured = [m for m in rapl.meters if m.info.component == component]
        shares = _best([m for m in node.meters if m.info.component == component])
        grace = [m.info.device for m in found.meters if m.info.model.startswith("NVIDIA Grace")]
        if measured:
            found.meters.extend(measured)
            found.missing.extend(m for m in rapl.missing if m.component == component)
            continue
        found.missing.extend(m for m in node.missing if m.component == component)
        if shares:
            found.meters.extend(shares)
        elif modules or (component == "dram" and grace):
            holders = ", ".join(grace if component == "dram" and grace else modules)
            reason = f"{GRACE_REASON}: counted in {holders}"
            found.missing.append(Missing(component, component, reason))
        else:
            found.missing.extend(m for m in rapl.missing if m.component == component)
            if not _take(found, soc, component):
                found.extend(fallback())


def _rest_of_node(
    found: Found, node: Found, components: Sequence[Component], accelerators: int
) -> None:
    """The whole-node meter as ``other`` (rule 5), unless the run leaves out GPUs of the node.

    Where GPUs are measured but fewer than the node's ``accelerators`` (a ``gpus`` selection, or
    ``CUDA_VISIBLE_DEVICES`` giving this job some of the node's GPUs), the rest would hold the
    others, which the jobs using them count too: then a ``Missing`` says why.
    """
    rest = [m for m in node.meters if m.info.component == "other"]
    found.missing.extend(m for m in node.missing if m.component == "other")
    gpus = {m.info.device for m in found.meters if m.info.component == "gpu"}
    gpus |= {
        m.device
        for m in found.missing
        if m.component == "gpu" and m.device != "gpu" and m not in node.missing
    }
    if "gpu" not in components or len(gpus) >= accelerators:
        found.meters.extend(rest)
        return
    reason = (
        f"this run measures {len(gpus)} of the node's {accelerators} accelerators: the node's "
        "rest would hold the others, which the jobs using them count too"
    )
    fix = "measure every GPU of the node in one process (no gpus selection, every GPU visible)"
    found.missing.extend(Missing("other", m.info.device, reason, fix) for m in rest)


def _best(meters: Sequence[Meter]) -> list[Meter]:
    """One meter per device: the one whose method ranks first (``METHOD_RANK``)."""
    chosen: dict[str, Meter] = {}
    for meter in meters:
        held = chosen.get(meter.info.device)
        if held is None or _ranks_before(meter, held):
            chosen[meter.info.device] = meter
    return list(chosen.values())


def _ranks_before(candidate: Meter, held: Meter) -> bool:
    return METHOD_RANK[candidate.info.method] < METHOD_RANK[held.info.method]


def _node_gpus(found: Found, node: Found, gpus: Sequence[int | str] | None) -> None:
    """Put the node's GPU meters where they beat what the GPU backends found (rule 2).

    Where no GPU backend works, the node's accelerators stand in for every GPU, or for those
    ``gpus`` names by index (an entry naming none raises ``ValueError`` naming ``gpus``).
    """
    node_gpus = [m for m in node.meters if m.info.component == "gpu"]
    shares = {m.info.device: m for m in _best(node_gpus)}
    for meter in list(found.meters):
        share = shares.get(f"gpu{meter.nvml_index}") if isinstance(meter, NvmlMeter) else None
        if share is not None and _ranks_before(share, meter):
            position = found.meters.index(meter)
            share.info = dataclasses.replace(share.info, device=meter.info.device)
            found.meters[position] = share
            meter.close()
    unread = [m for m in node.missing if m.component == "gpu"]
    if any(m.component == "gpu" for m in found.missing):  # say why the node could not fill in
        found.missing.extend(unread)
    if "CUDA_VISIBLE_DEVICES" in os.environ:
        return
    for gap in list(found.missing):
        if gap.component != "gpu" or MIG_REASON in gap.reason:
            continue
        stand_ins = [shares[gap.device]] if gap.device in shares else []
        if gap.device == "gpu" and not found.meters:  # no GPU backend at all: every accelerator
            stand_ins = _chosen_accelerators(list(shares.values()), gpus)
        if stand_ins:
            found.missing.remove(gap)
            found.meters.extend(stand_ins)


def _chosen_accelerators(shares: list[Meter], gpus: Sequence[int | str] | None) -> list[Meter]:
    """The node's accelerator meters that ``gpus`` names by index (``1``: ``accel1``), or all.

    A lone ``accel_energy`` is index 0. An entry naming none raises ``ValueError``.
    """
    if gpus is None or not shares:
        return shares
    by_name = {("gpu0" if m.info.device == "gpu" else m.info.device): m for m in shares}
    chosen: list[Meter] = []
    for item in gpus:
        entry = str(item).strip()
        meter = by_name.get(f"gpu{int(entry)}") if entry.isascii() and entry.isdigit() else None
        if meter is None:
            raise ValueError(
                f"gpus: {item!r} names none of this node's accelerators; accepted without a GPU "
                f"driver: the index of one of {', '.join(sorted(by_name))} (its accelN file)"
            )
        if meter not in chosen:
            chosen.append(meter)
    return chosen


def _within_modules(found: Found) -> None:
    """A GH200 GPU's module figure less its Grace socket's (rule 3), where that is measured."""
    devices = {m.info.device for m in found.meters}
    for meter in found.meters:
        if meter.info.component != "gpu" or not module_scoped(meter.info.model):
            continue
        if isinstance(meter, NvmlMeter):
            cpu = f"cpu{meter.nvml_index}"
        else:
            cpu = meter.info.minus[0] if meter.info.minus else ""
        meter.info = dataclasses.replace(meter.info, minus=(cpu,) if cpu in devices else ())


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
