"""Discovery of this machine's meters: for each device, the most direct source that works wins.

GPUs come from NVML. CPU packages and DRAM come from RAPL (powercap files, or pyRAPL when chosen);
where RAPL cannot be read, the labelled estimates take over, and the reason RAPL failed is kept
among the ``missing`` entries so the user learns the fix.

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
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Literal

from backends.base import COMPONENTS, Component, Found, Meter, Missing
from backends.cpu.estimate import find_cpu_estimate
from backends.cpu.pyrapl import find_pyrapl
from backends.cpu.rapl import find_rapl
from backends.gpu.nvidia import MIG_REASON, NvmlMeter, find_gpus, module_scoped
from backends.memory.estimate import find_memory_estimate
from backends.node.cray import find_pm_counters
from backends.node.grace import find_grace

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
    found = Found()
    if "gpu" in components:
        found.extend(find_gpus(gpus))
        _node_gpus(found, node)
    if "cpu" in components or "dram" in components:
        _host_components(found, node, components, rapl_reader)
    _within_modules(found)
    if "other" in components:
        found.meters.extend(m for m in node.meters if m.info.component == "other")
        found.missing.extend(m for m in node.missing if m.component == "other")
    for meter in node.meters:
        if meter not in found.meters:
            meter.close()
    return found


def _host_components(
    found: Found, node: Found, components: Sequence[Component], rapl_reader: RaplReader
) -> None:
    """CPU and DRAM: RAPL, else the node's shares (Cray, Grace), else the estimates.

    Where a GH200 module figure (which holds the Grace socket and its memory) stands for a GPU,
    or a Grace socket figure for a CPU, what they contain is said so instead of estimated.
    """
    rapl = find_pyrapl() if rapl_reader == "pyrapl" else find_rapl()
    fallbacks: dict[Component, Callable[[], Found]] = {
        "cpu": find_cpu_estimate,
        "dram": find_memory_estimate,
    }
    modules = [m.info.device for m in found.meters if module_scoped(m.info.model)]
    for component, fallback in fallbacks.items():
        if component not in components:
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
            found.extend(fallback())


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


def _node_gpus(found: Found, node: Found) -> None:
    """Put the node's GPU meters where they beat what the GPU backends found (rule 2)."""
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
            stand_ins = list(shares.values())
        if stand_ins:
            found.missing.remove(gap)
            found.meters.extend(stand_ins)


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
