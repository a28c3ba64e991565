"""NVIDIA GPU meters through NVML (the official ``pynvml`` bindings from nvidia-ml-py).

Where a GPU has the total-energy counter (``nvmlDeviceGetTotalEnergyConsumption``, Volta and newer,
millijoules since the driver was loaded) it is read as a counter meter; where it does not, the
board's power draw (``nvmlDeviceGetPowerUsage``, milliwatts) is polled instead. NVML exposes energy
for the whole board only: a whole GPU in MIG mode is reported as missing, and a MIG slice named in
``CUDA_VISIBLE_DEVICES`` gets the board's energy times the slice's share of its compute slices,
labelled ``estimate`` (``backends.attribution``). A GPU other processes use too can be attributed
by their utilisation samples (``NvmlMeter.process_share``).

Importing this module does not touch NVML; ``find_gpus`` initialises it and the last meter's
``close()`` shuts it down again.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pynvml

from backends.attribution import SHARE_SPAN_S, FixedShare, SharedMeter
from backends.base import (
    Found,
    Meter,
    MeterError,
    MeterInfo,
    MeterPermissionError,
    MeterReadError,
    MeterUnavailable,
    Method,
    Missing,
    Reading,
)
from backends.session import CountedSession, SessionMeter

logger = logging.getLogger(__name__)

NO_NVML_REASON = "NVML not found (no NVIDIA driver)"
NO_NVML_FIX = (
    "install the NVIDIA driver (it provides libnvidia-ml.so.1); in a container, start it with GPU "
    "access (e.g. `docker run --gpus all` with the NVIDIA Container Toolkit)"
)
CHECK_GPU_FIX = "check the GPU and this process's access to it with `nvidia-smi -q`"
MIG_REASON = "MIG mode is enabled: per-slice energy is not exposed by NVML"
MIG_FIX = (
    "measure on a GPU with MIG disabled (`nvidia-smi -i <index> -mig 0`); the board's energy "
    "counter covers every slice, so reading it for one job would over-count"
)


def find_gpus(wanted: Sequence[int | str] | None = None, visible: str | None = None) -> Found:
    """A meter for each NVIDIA GPU this process can use, and what cannot be measured and why.

    ``visible`` is the ``CUDA_VISIBLE_DEVICES`` value (read from the environment when None): indices
    or ``GPU-`` UUIDs (unique prefixes allowed), mapped in order to the logical names ``gpu0``,
    ``gpu1``, ... as CUDA numbers them; ``""`` means no GPU. ``wanted`` picks a subset by logical
    index or UUID and raises ``ValueError`` (naming ``gpus``) for one that does not exist. A missing
    driver, a MIG slice or an unreadable GPU becomes a ``Missing`` entry, never an exception.
    """
    if visible is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    try:
        _session.acquire()
    except (pynvml.NVMLError, OSError) as err:
        return Found(missing=[Missing("gpu", "gpu", f"{NO_NVML_REASON}: {err}", NO_NVML_FIX)])
    try:
        try:
            physical = _list_physical_gpus()
        except pynvml.NVMLError as err:
            reason = f"NVML could not list the GPUs: {err}"
            return Found(missing=[Missing("gpu", "gpu", reason, NO_NVML_FIX)])
        slots, found = _resolve_visible(visible, physical)
        found.notes.extend(_numbering_caveat(visible, physical))
        for index in _select(wanted, slots, visible):
            slot = slots[index]
            opened = _open(f"gpu{index}", slot) if isinstance(slot, _PhysicalGpu) else slot
            found.add(opened)
        return found
    finally:
        _session.release()


class NvmlMeter(SessionMeter):
    """One GPU read through NVML; holds a share of the process-wide NVML session until closed.

    ``nvml_index`` is the device's NVML index (PCI bus order), whatever CUDA calls it.
    """

    method: ClassVar[Method]

    def __init__(self, info: MeterInfo, handle: Any, nvml_index: int) -> None:
        super().__init__(_session)
        self.info = info
        self.nvml_index = nvml_index
        self._handle = handle

    def _call(self, function: str) -> tuple[int, float]:
        """Run one NVML device query and return its value with the monotonic time it returned."""
        self._check_open()
        try:
            value = int(getattr(pynvml, function)(self._handle))
        except pynvml.NVMLError as err:
            where = f"{self.info.device} ({self.info.detail})"
            raise nvml_meter_error(where, function, err) from err
        return value, time.monotonic()

    def process_share(
        self, pids: Callable[[], frozenset[int]]
    ) -> Callable[[], float | None] | None:
        """Where NVML lists processes outside ``pids`` on this GPU, their SM-utilisation share.

        The share is ``pids``'s SM utilisation over every process's, from the samples
        ``nvmlDeviceGetProcessUtilization`` gives since the previous call; None while there are
        none (an idle GPU, or a driver without per-process samples). A GPU whose process list
        cannot be read, or shows no other process, is left whole (None).
        """
        try:
            listed = {
                p.pid
                for query in (
                    pynvml.nvmlDeviceGetComputeRunningProcesses,
                    pynvml.nvmlDeviceGetGraphicsRunningProcesses,
                )
                for p in query(self._handle)
            }
        except pynvml.NVMLError:
            return None
        if not listed - pids():
            return None
        return _UtilisationShare(self._handle, pids)


class _UtilisationShare:
    """A GPU's SM-utilisation share of a set of processes, over the samples since the last call."""

    def __init__(self, handle: Any, pids: Callable[[], frozenset[int]]) -> None:
        self._handle = handle
        self._pids = pids
        self._seen_us = 0  # NVML's timestamp (us) of the latest sample taken
        self._asked_s = -math.inf

    def __call__(self) -> float | None:
        """Those processes' SM utilisation over all processes', or None with no new samples.

        Asked at most every ``SHARE_SPAN_S`` (a driver call, and a follower reads the counter
        every 100 ms); None between, which keeps the latest share.
        """
        now_s = time.monotonic()
        if now_s - self._asked_s < SHARE_SPAN_S:
            return None
        self._asked_s = now_s
        try:
            samples = pynvml.nvmlDeviceGetProcessUtilization(self._handle, self._seen_us)
        except pynvml.NVMLError:  # Not Found: no sample since the last call
            return None
        if not samples:
            return None
        self._seen_us = max(self._seen_us, *(int(s.timeStamp) for s in samples))
        pids = self._pids()
        total = sum(int(s.smUtil) for s in samples)
        ours = sum(int(s.smUtil) for s in samples if s.pid in pids)
        return ours / total if total > 0 else None


class NvmlCounterMeter(NvmlMeter):
    """The GPU's total-energy counter: exact, but a read costs ~4 ms, so the sampler reads it."""

    method: ClassVar[Method] = "counter"
    fast = False
    _has_instant = True

    def read(self) -> Reading:
        """Energy used since the driver was loaded (NVML reports mJ), in joules."""
        energy_mj, t_s = self._call("nvmlDeviceGetTotalEnergyConsumption")
        return Reading(t_s=t_s, energy_j=energy_mj / 1000.0)

    def power_hint_w(self) -> float | None:
        """The board's current power draw (~2 us to read), or None when NVML cannot give it."""
        try:
            power_mw, _ = self._call("nvmlDeviceGetPowerUsage")
        except MeterError:
            return None
        return power_mw / 1000.0

    def instant_power_w(self) -> float | None:
        """The board's instant power (``NVML_FI_DEV_POWER_INSTANT``, mW), in W; None without it.

        A few us to read; the field's own update period and lag are measured by
        ``python -m benchmarks gpu-check``. A board or driver without the field is asked once.
        """
        if not self._has_instant or self._closed:
            return None
        try:
            field = pynvml.nvmlDeviceGetFieldValues(
                self._handle, [pynvml.NVML_FI_DEV_POWER_INSTANT]
            )[0]
        except pynvml.NVMLError:
            return None
        if field.nvmlReturn != pynvml.NVML_SUCCESS:
            self._has_instant = field.nvmlReturn != pynvml.NVML_ERROR_NOT_SUPPORTED
            return None
        watts = float(field.value.uiVal) / 1000.0
        if field.value.uiVal >= _NO_VALUE or (
            self.max_power_w is not None and watts > _IMPLAUSIBLE * self.max_power_w
        ):
            return None  # a driver's "no value", or far above what the board can draw
        return watts


class NvmlPowerMeter(NvmlMeter):
    """Power polling for GPUs without the energy counter (before Volta); a read costs ~2 us."""

    method: ClassVar[Method] = "power"
    fast = True

    def read(self) -> Reading:
        """The board's power draw (NVML reports mW), in watts."""
        power_mw, t_s = self._call("nvmlDeviceGetPowerUsage")
        return Reading(t_s=t_s, power_w=power_mw / 1000.0)


_NO_VALUE = 0xFFFFFFFF  # what NVML fields hold when the driver has no value
_IMPLAUSIBLE = 2.0  # an instant power above this many times the power limit is a bad reading

_NVML_ERRORS: dict[int, type[MeterError]] = {
    pynvml.NVML_ERROR_UNINITIALIZED: MeterUnavailable,  # NVML shut down under the meter
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED: MeterUnavailable,
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: MeterUnavailable,
    pynvml.NVML_ERROR_FUNCTION_NOT_FOUND: MeterUnavailable,
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH: MeterUnavailable,  # driver updated under the run
    pynvml.NVML_ERROR_NOT_SUPPORTED: MeterUnavailable,
    pynvml.NVML_ERROR_NOT_FOUND: MeterUnavailable,
    pynvml.NVML_ERROR_GPU_IS_LOST: MeterUnavailable,  # fallen off the bus
    pynvml.NVML_ERROR_RESET_REQUIRED: MeterUnavailable,
    pynvml.NVML_ERROR_NO_PERMISSION: MeterPermissionError,
    pynvml.NVML_ERROR_OPERATING_SYSTEM: MeterPermissionError,  # blocked by the OS or a cgroup
}
_NVML_ERROR_NAMES = {
    getattr(pynvml, name): name for name in dir(pynvml) if name.startswith("NVML_ERROR_")
}


def nvml_meter_error(where: str, function: str, error: pynvml.NVMLError) -> MeterError:
    """The ``MeterError`` for an NVML error that ``function`` returned for the device ``where``.

    The one mapping of NVML error codes: a lost GPU, NVML uninitialised or unloaded, a function
    or device no longer there give ``MeterUnavailable``; NO_PERMISSION and OPERATING_SYSTEM
    ``MeterPermissionError``; any other code (UNKNOWN, TIMEOUT, ...) ``MeterReadError``. The
    message names the device, the call, the cause and the code; raise it ``from error``.
    """
    code = error.value
    kind = _NVML_ERRORS.get(code, MeterReadError)
    name = _NVML_ERROR_NAMES.get(code, f"NVML error {code}")
    return kind(f"{where}: {function} failed: {error} ({name})")


@dataclass(frozen=True, slots=True)
class _PhysicalGpu:
    """A device as NVML numbers it (PCI bus order), or why it could not be queried."""

    index: int
    handle: Any = None
    uuid: str = ""
    model: str = ""
    error: str = ""
    slice_share: float | None = None  # a MIG slice: its share of the board (``handle``'s)
    detail: str = ""


_session = CountedSession(lambda: pynvml.nvmlInit(), lambda: pynvml.nvmlShutdown())
"""The process's NVML session. NVML keeps its own count too (the API reference: shutdown only
occurs when the count of ``nvmlInit`` calls reaches zero), so other NVML users are not disturbed."""


def _list_physical_gpus() -> list[_PhysicalGpu]:
    """Every device NVML lists; one it may not query (e.g. no permission) keeps its error."""
    gpus = []
    for index in range(int(pynvml.nvmlDeviceGetCount())):
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            uuid = _text(pynvml.nvmlDeviceGetUUID(handle))
            model = _text(pynvml.nvmlDeviceGetName(handle))
        except pynvml.NVMLError as err:
            gpus.append(_PhysicalGpu(index, error=str(err)))
            continue
        gpus.append(_PhysicalGpu(index, handle, uuid, model))
    return gpus


def _resolve_visible(
    visible: str | None, physical: list[_PhysicalGpu]
) -> tuple[list[_PhysicalGpu | Missing], Found]:
    """Map CUDA_VISIBLE_DEVICES to devices the way CUDA does, in order.

    CUDA stops at the first entry that names no device (``-1`` is the usual way to hide all that
    follow) and accepts a unique prefix of a ``GPU-`` UUID. ``MIG-`` entries are slices. Returns
    the slots by logical index and a ``Found`` holding what the variable names but cannot be used.
    """
    if visible is None:
        return list(physical), Found()
    slots: list[_PhysicalGpu | Missing] = []
    found = Found()
    for entry in (part.strip() for part in visible.split(",")):
        if not entry:
            continue
        device = f"gpu{len(slots)}"
        if entry.startswith("MIG-"):
            mig = _find_slice(entry, physical)
            slots.append(mig or Missing("gpu", device, f"{MIG_REASON} ({entry})", MIG_FIX))
            continue
        if entry.startswith("-") and entry[1:].isdigit():
            break
        gpu, problem = _match_entry(entry, physical)
        if gpu is not None and any(slot is gpu for slot in slots):
            problem = "is listed twice"
        if gpu is None or problem:
            reason = f"CUDA_VISIBLE_DEVICES entry {entry!r} {problem}; CUDA ignores it and the rest"
            fix = f"list only GPUs that exist: {_describe(physical)}"
            found.missing.append(Missing("gpu", device, reason, fix))
            break
        slots.append(gpu)
    return slots, found


def _match_entry(entry: str, gpus: Sequence[_PhysicalGpu]) -> tuple[_PhysicalGpu | None, str]:
    """The device an index or (prefix of a) UUID names, or None and why not."""
    if entry.isdigit():
        matches = [gpu for gpu in gpus if gpu.index == int(entry)]
    elif entry.startswith("GPU-"):
        matches = [gpu for gpu in gpus if gpu.uuid and gpu.uuid.startswith(entry)]
    else:
        return None, "is neither an index nor a GPU- UUID"
    if not matches:
        return None, "names no GPU"
    if len(matches) > 1:
        return None, f"matches {len(matches)} GPUs"
    return matches[0], ""


def _select(
    wanted: Sequence[int | str] | None, slots: list[_PhysicalGpu | Missing], visible: str | None
) -> list[int]:
    """Logical indices picked by ``wanted`` (all when None), in its order, without repeats."""
    if wanted is None:
        return list(range(len(slots)))
    by_logical = [
        _PhysicalGpu(i, uuid=slot.uuid)
        if isinstance(slot, _PhysicalGpu)
        else _PhysicalGpu(i, error="not measurable")
        for i, slot in enumerate(slots)
    ]
    picked: list[int] = []
    for item in wanted:
        gpu, problem = _match_entry(str(item).strip(), by_logical)
        if gpu is None:
            raise ValueError(
                f"gpus: {item!r} {problem}; accepted: indices into the visible GPUs or their "
                f"UUIDs; available: {_describe(by_logical)} (CUDA_VISIBLE_DEVICES={visible!r})"
            )
        if gpu.index not in picked:
            picked.append(gpu.index)
    return picked


def _open(device: str, gpu: _PhysicalGpu) -> Meter | Missing:
    """A counter meter where the GPU has the energy counter, else a power meter, else Missing."""
    if gpu.error:
        reason = f"NVML cannot query GPU {gpu.index}: {gpu.error}"
        return Missing("gpu", device, reason, CHECK_GPU_FIX)
    detail = gpu.detail or f"uuid={gpu.uuid} nvml_index={gpu.index}"
    meter_class: type[NvmlMeter] = NvmlCounterMeter
    try:
        if gpu.slice_share is None and _mig_enabled(gpu.handle):
            return Missing("gpu", device, f"{MIG_REASON} ({detail})", MIG_FIX)
        try:
            pynvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle)
        except pynvml.NVMLError_NotSupported:
            pynvml.nvmlDeviceGetPowerUsage(gpu.handle)
            meter_class = NvmlPowerMeter
    except pynvml.NVMLError_NotSupported:
        reason = f"{gpu.model} reports neither an energy counter nor its power draw ({detail})"
        return Missing("gpu", device, reason, "no software fix: this board has no readable sensor")
    except pynvml.NVMLError as err:
        reason = f"NVML cannot read {gpu.model} ({detail}): {err}"
        return Missing("gpu", device, reason, CHECK_GPU_FIX)
    info = MeterInfo(
        device, "gpu", gpu.model, meter_class.method, False, detail=detail, scope=_scope(gpu.model)
    )
    meter = meter_class(info, gpu.handle, gpu.index)
    meter.max_power_w = _power_limit_w(gpu.handle)
    if gpu.slice_share is None:
        return meter
    return SharedMeter(meter, FixedShare(gpu.slice_share), "estimate")


def module_scoped(model: str) -> bool:
    """Whether NVML's figures for this model cover a whole module, not the GPU alone (GH200).

    On a Grace Hopper superchip the energy counter covers the whole module: GPU, HBM, the Grace
    CPU socket and its memory (Zeus, PR #172).
    """
    return "GH200" in model.upper()


def _scope(model: str) -> str:
    """What a GPU's NVML figure covers, in words."""
    if module_scoped(model):
        return "the whole GH200 module: GPU, HBM, the Grace socket and regulator loss"
    return "the GPU board: GPU chip, its memory and the board's circuitry"


def _find_slice(uuid: str, physical: Sequence[_PhysicalGpu]) -> _PhysicalGpu | None:
    """The MIG slice ``uuid`` names, as its board with the slice's share; None if none matches.

    The share is the slice's GPU-instance compute slices over the board's (7 on A100 and H100):
    a 3g.40gb slice is 3/7 of the board. Memory and copy engines are not weighed.
    """
    for gpu in physical:
        if gpu.error:
            continue
        try:
            if not _mig_enabled(gpu.handle):
                continue
            slices = int(pynvml.nvmlDeviceGetMaxMigDeviceCount(gpu.handle))
            for index in range(slices):
                try:
                    handle = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(gpu.handle, index)
                except pynvml.NVMLError_NotFound:
                    continue
                if _text(pynvml.nvmlDeviceGetUUID(handle)) != uuid:
                    continue
                held = int(pynvml.nvmlDeviceGetAttributes(handle).gpuInstanceSliceCount)
                if not 0 < held <= slices:
                    return None
                detail = (
                    f"uuid={uuid} slice of uuid={gpu.uuid} nvml_index={gpu.index}: "
                    f"{held}/{slices} of the board's energy"
                )
                return dataclasses.replace(
                    gpu, model=f"{gpu.model} MIG {held}g", slice_share=held / slices, detail=detail
                )
        except pynvml.NVMLError:
            continue
    return None


def _power_limit_w(handle: Any) -> float | None:
    """The board's enforced power limit in W (NVML reports mW), or None where it cannot say.

    Error bounds take it as the most the board draws over a counter step.
    """
    try:
        limit_mw = int(pynvml.nvmlDeviceGetEnforcedPowerLimit(handle))
    except pynvml.NVMLError:
        return None
    return limit_mw / 1000.0 if 0 < limit_mw < _NO_VALUE else None


def _mig_enabled(handle: Any) -> bool:
    """Whether MIG mode is on now; GPUs without MIG (before Ampere) answer Not Supported."""
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError_NotSupported:
        return False
    return bool(current == pynvml.NVML_DEVICE_MIG_ENABLE)


def _numbering_caveat(visible: str | None, physical: list[_PhysicalGpu]) -> list[str]:
    """A note when CUDA's numbering may not be NVML's, so ``gpuN`` might not be CUDA device N.

    NVML numbers devices in PCI bus order; CUDA does too only with CUDA_DEVICE_ORDER=PCI_BUS_ID
    (its default puts the fastest first). That only matters when the models differ and the GPUs
    are chosen by index rather than UUID.
    """
    if os.environ.get("CUDA_DEVICE_ORDER") == "PCI_BUS_ID":
        return []
    if len({gpu.model for gpu in physical if gpu.model}) < 2:
        return []
    entries = [part.strip() for part in (visible or "").split(",")]
    if visible is not None and not any(entry.isdigit() for entry in entries):
        return []
    return [
        "GPUs of different models and CUDA_DEVICE_ORDER is not PCI_BUS_ID: CUDA may number them "
        "differently from NVML, so gpuN may not be the GPU CUDA calls N; set "
        "CUDA_DEVICE_ORDER=PCI_BUS_ID or list GPU UUIDs in CUDA_VISIBLE_DEVICES"
    ]


def _describe(gpus: Sequence[_PhysicalGpu]) -> str:
    """``0 (GPU-...), 1 (GPU-...)``, for messages that list what exists."""
    return ", ".join(f"{gpu.index} ({gpu.uuid or gpu.error})" for gpu in gpus) or "none"


def _text(value: object) -> str:
    """NVML strings arrive as ``str`` from current bindings and as ``bytes`` from older ones."""
    return value.decode() if isinstance(value, bytes) else str(value)
