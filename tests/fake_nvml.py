"""A simulated NVML, installed at the ``pynvml`` boundary so everything above it runs for real.

The one NVML simulator of the repository. The tests install it for the length of a test
(``install_fake_nvml``); the benchmarks install it for good in each child process
(``SimulatedNVML(gpus).install()``), where wattprint, carbontracker, CodeCarbon and Zeus all reach
the same boards through ``pynvml``. It needs nothing but the standard library and ``pynvml`` at
run time (pytest only for type checking), so a benchmark environment without pytest imports it.

Each simulated GPU draws a piecewise-constant power over ``time.monotonic()``, so the energy it
used between any two moments is known exactly (``SimulatedGPU.energy_j``); its energy counter is
that integral from a fixed origin, in whole millijoules as the real call returns it. A profile
can be given up front or changed as a load runs (``StepProfile.set``). Errors are the real
``pynvml`` exception classes, so the code under test catches exactly what it would on a GPU.

    gpu = SimulatedGPU(power_w=step_profile([(t0, 100.0), (t0 + 0.05, 400.0)]))
    nvml = install_fake_nvml(monkeypatch, [gpu, SimulatedGPU(has_counter=False)])
    found = find_gpus()  # ... later: gpu.energy_j(t_a, t_b) is the truth to compare against
"""

from __future__ import annotations

import bisect
import itertools
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import pynvml

if TYPE_CHECKING:
    import pytest


class StepProfile:
    """Power in watts that holds from each start time (monotonic s) until the next one.

    The first step also covers every moment before its start, so a profile is defined everywhere.
    ``set`` adds a step now, for a load that changes as it runs; a lock keeps every read
    consistent with the changes made before it.
    """

    def __init__(self, starts_s: Sequence[float], watts: Sequence[float]) -> None:
        self._lock = threading.Lock()
        self._starts_s = list(starts_s)
        self._watts = list(watts)
        self._energy_at_start_j = [0.0]  # from the first start to each start
        for i in range(1, len(self._starts_s)):
            step_s = self._starts_s[i] - self._starts_s[i - 1]
            self._energy_at_start_j.append(
                self._energy_at_start_j[-1] + self._watts[i - 1] * step_s
            )

    def __call__(self, t_s: float) -> float:
        """The power at monotonic time ``t_s``, in watts."""
        with self._lock:
            return self._watts[self._step_at(t_s)]

    def energy_j(self, t0_s: float, t1_s: float) -> float:
        """The exact energy between two monotonic times, in joules."""
        if t1_s < t0_s:
            raise ValueError(f"t1_s ({t1_s}) is before t0_s ({t0_s})")
        with self._lock:
            return self._energy_since_first_start_j(t1_s) - self._energy_since_first_start_j(t0_s)

    def set(self, watts: float) -> float:
        """Draw ``watts`` from now on; returns the monotonic time of the change.

        Raises ``ValueError`` for negative watts, or where a step already given starts later.
        """
        if watts < 0:
            raise ValueError(f"watts must be >= 0, got {watts}")
        with self._lock:
            now_s = time.monotonic()
            if now_s < self._starts_s[-1]:
                raise ValueError(f"a step starts at {self._starts_s[-1]}, after now ({now_s})")
            if watts != self._watts[-1]:
                self._energy_at_start_j.append(self._energy_since_first_start_j(now_s))
                self._starts_s.append(now_s)
                self._watts.append(float(watts))
            return now_s

    def _step_at(self, t_s: float) -> int:
        return max(bisect.bisect_right(self._starts_s, t_s) - 1, 0)

    def _energy_since_first_start_j(self, t_s: float) -> float:
        step = self._step_at(t_s)
        held_s = t_s - self._starts_s[step]
        return self._energy_at_start_j[step] + self._watts[step] * held_s


def step_profile(steps: Sequence[tuple[float, float]]) -> StepProfile:
    """A piecewise-constant power profile from ``(start_time_s, watts)`` pairs in time order."""
    if not steps:
        raise ValueError("steps: give at least one (start_time_s, watts) pair")
    starts_s = tuple(float(start) for start, _ in steps)
    watts = tuple(float(w) for _, w in steps)
    if any(b <= a for a, b in itertools.pairwise(starts_s)):
        raise ValueError(f"steps: start times must increase, got {starts_s}")
    if any(w < 0 for w in watts):
        raise ValueError(f"steps: watts must be >= 0, got {watts}")
    return StepProfile(starts_s, watts)


def constant_power(watts: float) -> StepProfile:
    """The same power at every moment."""
    return step_profile([(0.0, watts)])


@dataclass
class SimulatedGPU:
    """One simulated NVIDIA GPU: what it is, what it supports, how it draws power and fails.

    ``has_counter=False`` is a pre-Volta board (power only); ``mig_capable=False`` a board whose
    MIG query answers Not Supported (before Ampere). From ``fail_after_s`` (monotonic) on, every
    call on the device raises the NVML error code ``fail_with`` (GPU_IS_LOST unless set); set it
    during a run to lose the GPU there.
    ``counter_reads_s`` and ``power_reads_s`` record the moment each value was taken.
    ``processes`` maps the PID of each process NVML lists on the board to its SM utilisation in
    percent, which every per-process utilisation sample reports; ``mig_slices`` are the board's
    MIG slices (with ``mig=True``), of ``MIG_SLICES`` compute slices in all.

    Hopper's NVML is modelled by ``counter_step_s`` (the counter changes only at
    ``grid_origin_s + k * counter_step_s``), ``power_average_s`` (power usage is the mean over that
    many seconds up to the last update) and ``read_sample_at`` (the share of ``read_delay_s`` after
    which a counter read takes its value: 0.5 is mid-way). ``reads_in_flight`` counts counter
    reads under way. The defaults are a counter that changes continuously, read at its end.

    The instant power field (``nvmlDeviceGetFieldValues`` with ``NVML_FI_DEV_POWER_INSTANT``, mW)
    is the mean power over the ``instant_step_s`` before each of its own updates (every
    ``instant_step_s`` from ``grid_origin_s``), reported ``instant_lag_s`` after the span it
    covers; 0 and 0 (the defaults) give the power at the moment of the call.
    ``has_instant=False`` is a board or driver without the field.
    """

    name: str = "NVIDIA H100 80GB HBM3"
    uuid: str = field(default_factory=lambda: f"GPU-{uuid4()}")
    power_w: StepProfile = field(default_factory=lambda: constant_power(300.0))
    has_counter: bool = True
    has_power: bool = True
    mig: bool = False
    mig_capable: bool = True
    read_delay_s: float = 0.0
    fail_after_s: float | None = None
    fail_with: int = pynvml.NVML_ERROR_GPU_IS_LOST
    counter_origin_s: float = 0.0
    counter_step_s: float = 0.0
    grid_origin_s: float = 0.0
    power_average_s: float = 0.0
    read_sample_at: float = 1.0
    processes: dict[int, int] = field(default_factory=dict)
    mig_slices: list[SimulatedMigSlice] = field(default_factory=list)
    has_instant: bool = True
    instant_step_s: float = 0.0
    instant_lag_s: float = 0.0
    reads_in_flight: int = field(default=0, init=False)
    counter_reads_s: list[float] = field(default_factory=list, init=False)
    power_reads_s: list[float] = field(default_factory=list, init=False)

    def energy_j(self, t0_s: float, t1_s: float) -> float:
        """The exact simulated energy between two monotonic times, in joules."""
        return self.power_w.energy_j(t0_s, t1_s)

    def counter_mj(self, t_s: float) -> int:
        """What the energy counter reads at ``t_s``: whole mJ since ``counter_origin_s``."""
        return math.floor(self.energy_j(self.counter_origin_s, self.last_update_s(t_s)) * 1000.0)

    def power_usage_w(self, t_s: float) -> float:
        """What power usage reads at ``t_s``: the power then, or the trailing mean."""
        if self.power_average_s <= 0:
            return self.power_w(t_s)
        update_s = self.last_update_s(t_s)
        start_s = update_s - self.power_average_s
        return self.energy_j(start_s, update_s) / self.power_average_s

    def instant_w(self, t_s: float) -> float:
        """What the instant power field reads at ``t_s``: the power then, or a lagged mean."""
        if self.instant_step_s <= 0:
            return self.power_w(t_s - self.instant_lag_s)
        steps = math.floor((t_s - self.instant_lag_s - self.grid_origin_s) / self.instant_step_s)
        end_s = self.grid_origin_s + steps * self.instant_step_s
        return self.energy_j(end_s - self.instant_step_s, end_s) / self.instant_step_s

    def last_update_s(self, t_s: float) -> float:
        """The latest moment the counter (and averaged power) changed at or before ``t_s``."""
        if self.counter_step_s <= 0:
            return t_s
        steps = math.floor((t_s - self.grid_origin_s) / self.counter_step_s)
        return self.grid_origin_s + steps * self.counter_step_s


MIG_SLICES = 7
"""Compute slices of an A100 or H100 board, which its MIG slices take 1, 2, 3, 4 or 7 of."""


@dataclass
class SimulatedMigSlice:
    """One MIG slice of a simulated board: its UUID and the compute slices it holds."""

    slices: int = 3
    uuid: str = field(default_factory=lambda: f"MIG-{uuid4()}")


INSTANT_STEP_S = 0.02  # assumed for Hopper's NVML_FI_DEV_POWER_INSTANT; to be measured
INSTANT_LAG_S = 0.005


def hopper(power_w: StepProfile, phase_s: float = 0.037) -> SimulatedGPU:
    """A simulated H100 timed as NVML times it, for runs that depend on the driver's timing.

    The energy counter changes every 100 ms on a grid ``phase_s`` behind now (boards do not update
    in step) and counts from there; a counter read takes 4 ms, its value taken mid-way; power
    usage is the mean of the last second, refreshed on the same grid. The instant power field is
    taken to be the mean of 20 ms spans, each reported 5 ms after it ends: an assumption, not a
    measurement (``python -m benchmarks gpu-check`` measures both on a real board).
    """
    grid_origin_s = time.monotonic() - phase_s
    return SimulatedGPU(
        power_w=power_w,
        counter_step_s=0.1,
        grid_origin_s=grid_origin_s,
        counter_origin_s=grid_origin_s,
        power_average_s=1.0,
        read_delay_s=0.004,
        read_sample_at=0.5,
        instant_step_s=INSTANT_STEP_S,
        instant_lag_s=INSTANT_LAG_S,
    )


class SimulatedNVML:
    """The NVML library state over a list of simulated GPUs; handles are the GPU objects.

    Like the real library it counts ``nvmlInit`` calls, shuts down when as many ``nvmlShutdown``
    calls have followed, and answers Uninitialized to device calls while shut down.
    ``init_calls`` and ``shutdown_calls`` count the calls made. Beyond what the meters read, it
    answers the queries other tools make as they start (architecture, power limit, memory,
    processes: an H100's figures, whatever the board's name); every other driver call answers
    Not Supported, as an old board's driver would.
    """

    def __init__(self, gpus: Sequence[SimulatedGPU]) -> None:
        self.gpus = list(gpus)
        self.init_calls = 0
        self.shutdown_calls = 0
        self._init_count = 0

    @property
    def initialized(self) -> bool:
        """Whether NVML is initialised now (more inits than shutdowns)."""
        return self._init_count > 0

    def install(self, monkeypatch: pytest.MonkeyPatch | None = None) -> SimulatedNVML:
        """Put this simulation in place of every ``pynvml`` function that reaches the driver.

        With ``monkeypatch`` the real functions come back when the test ends; without it (a
        benchmark's child process) the simulation stays for the life of the process.
        """
        calls = self._calls()
        for name in _DRIVER_CALLS:
            simulated = calls.get(name, _not_supported)
            if monkeypatch is None:
                setattr(pynvml, name, simulated)
            else:
                monkeypatch.setattr(pynvml, name, simulated)
        return self

    def nvmlInit(self) -> None:
        self.init_calls += 1
        self._init_count += 1

    def nvmlShutdown(self) -> None:
        self.shutdown_calls += 1
        self._init_count = max(self._init_count - 1, 0)

    def nvmlDeviceGetCount(self) -> int:
        self._require_init()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> SimulatedGPU:
        self._require_init()
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._device(self.gpus[index])

    def nvmlDeviceGetIndex(self, handle: SimulatedGPU) -> int:
        gpu = self._device(handle)
        return next(index for index, listed in enumerate(self.gpus) if listed is gpu)

    def nvmlDeviceGetName(self, handle: SimulatedGPU) -> str:
        return self._device(handle).name

    def nvmlDeviceGetUUID(self, handle: SimulatedGPU | SimulatedMigSlice) -> str:
        if isinstance(handle, SimulatedMigSlice):
            return self._slice(handle).uuid
        return self._device(handle).uuid

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: SimulatedGPU) -> int:
        if not self._device(handle).mig_capable:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return MIG_SLICES

    def nvmlDeviceGetMigDeviceHandleByIndex(
        self, handle: SimulatedGPU, index: int
    ) -> SimulatedMigSlice:
        gpu = self._device(handle)
        if not gpu.mig or not 0 <= index < len(gpu.mig_slices):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return gpu.mig_slices[index]

    def nvmlDeviceGetAttributes(self, handle: SimulatedMigSlice) -> SimpleNamespace:
        if not isinstance(handle, SimulatedMigSlice):  # a whole board answers only in MIG slices
            self._device(handle)
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        mig = self._slice(handle)
        return SimpleNamespace(
            gpuInstanceSliceCount=mig.slices, multiprocessorCount=mig.slices * 18
        )

    def nvmlDeviceGetComputeRunningProcesses(self, handle: SimulatedGPU) -> list[SimpleNamespace]:
        gpu = self._device(handle)
        return [SimpleNamespace(pid=pid, usedGpuMemory=1 << 30) for pid in gpu.processes]

    def nvmlDeviceGetProcessUtilization(
        self, handle: SimulatedGPU, last_seen_us: int
    ) -> list[SimpleNamespace]:
        """One sample per listed process, stamped now; Not Found when none is listed."""
        gpu = self._device(handle)
        if not gpu.processes:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        now_us = max(int(time.monotonic() * 1e6), last_seen_us + 1)
        return [
            SimpleNamespace(pid=pid, smUtil=sm, memUtil=0, encUtil=0, decUtil=0, timeStamp=now_us)
            for pid, sm in gpu.processes.items()
        ]

    def nvmlDeviceGetMigMode(self, handle: SimulatedGPU) -> list[int]:
        gpu = self._device(handle)
        if not gpu.mig_capable:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if gpu.mig else pynvml.NVML_DEVICE_MIG_DISABLE
        return [mode, mode]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: SimulatedGPU) -> int:
        gpu = self._device(handle)
        if not gpu.has_counter:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        gpu.reads_in_flight += 1
        try:  # one blocking wait, as the driver's call is; its value is taken part-way through
            started_s, delay_s = time.monotonic(), gpu.read_delay_s
            if delay_s > 0:
                time.sleep(delay_s)
            t_s = started_s + delay_s * gpu.read_sample_at
            if gpu.read_sample_at >= 1.0:
                t_s = time.monotonic()
        finally:
            gpu.reads_in_flight -= 1
        gpu.counter_reads_s.append(t_s)
        return gpu.counter_mj(t_s)

    def nvmlDeviceGetPowerUsage(self, handle: SimulatedGPU) -> int:
        gpu = self._device(handle)
        if not gpu.has_power:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        t_s = time.monotonic()
        gpu.power_reads_s.append(t_s)
        return round(gpu.power_usage_w(t_s) * 1000.0)

    def nvmlDeviceGetFieldValues(
        self, handle: SimulatedGPU, field_ids: Sequence[int | tuple[int, int]]
    ) -> list[SimpleNamespace]:
        """The instant power field where the board has it; every other field Not Supported."""
        gpu = self._device(handle)
        t_s = time.monotonic()
        values = []
        for entry in field_ids:
            field_id = entry[0] if isinstance(entry, tuple) else entry
            supported = field_id == pynvml.NVML_FI_DEV_POWER_INSTANT and gpu.has_instant
            milliwatts = round(gpu.instant_w(t_s) * 1000.0) if supported else 0
            values.append(
                SimpleNamespace(
                    fieldId=field_id,
                    scopeId=0,
                    timestamp=round(t_s * 1e6),
                    latencyUsec=0,
                    valueType=pynvml.NVML_VALUE_TYPE_UNSIGNED_INT,
                    nvmlReturn=pynvml.NVML_SUCCESS
                    if supported
                    else pynvml.NVML_ERROR_NOT_SUPPORTED,
                    value=SimpleNamespace(uiVal=milliwatts),
                )
            )
        return values

    def _calls(self) -> dict[str, Callable[..., Any]]:
        """What each simulated ``pynvml`` function does; the rest answer Not Supported."""
        const = self._const
        return {
            "nvmlInit": self.nvmlInit,
            "nvmlInitWithFlags": lambda flags: self.nvmlInit(),
            "nvmlShutdown": self.nvmlShutdown,
            "nvmlSystemGetDriverVersion": lambda: "580.00 (simulated)",
            "nvmlDeviceGetCount": self.nvmlDeviceGetCount,
            "nvmlDeviceGetHandleByIndex": self.nvmlDeviceGetHandleByIndex,
            "nvmlDeviceGetIndex": self.nvmlDeviceGetIndex,
            "nvmlDeviceGetName": self.nvmlDeviceGetName,
            "nvmlDeviceGetUUID": self.nvmlDeviceGetUUID,
            "nvmlDeviceGetMigMode": self.nvmlDeviceGetMigMode,
            "nvmlDeviceGetTotalEnergyConsumption": self.nvmlDeviceGetTotalEnergyConsumption,
            "nvmlDeviceGetPowerUsage": self.nvmlDeviceGetPowerUsage,
            "nvmlDeviceGetFieldValues": self.nvmlDeviceGetFieldValues,
            "nvmlDeviceGetArchitecture": const(pynvml.NVML_DEVICE_ARCH_HOPPER),
            "nvmlDeviceGetCudaComputeCapability": const((9, 0)),
            "nvmlDeviceGetEnforcedPowerLimit": const(700_000),
            "nvmlDeviceGetPowerManagementLimit": const(700_000),
            "nvmlDeviceGetTemperature": const(45),
            "nvmlDeviceGetUtilizationRates": const(SimpleNamespace(gpu=50, memory=20)),
            "nvmlDeviceGetComputeMode": const(0),
            "nvmlDeviceGetMemoryInfo": const(
                SimpleNamespace(total=80 << 30, free=79 << 30, used=1 << 30)
            ),
            "nvmlDeviceGetComputeRunningProcesses": self.nvmlDeviceGetComputeRunningProcesses,
            "nvmlDeviceGetProcessUtilization": self.nvmlDeviceGetProcessUtilization,
            "nvmlDeviceGetMaxMigDeviceCount": self.nvmlDeviceGetMaxMigDeviceCount,
            "nvmlDeviceGetMigDeviceHandleByIndex": self.nvmlDeviceGetMigDeviceHandleByIndex,
            "nvmlDeviceGetAttributes": self.nvmlDeviceGetAttributes,
            "nvmlDeviceGetGraphicsRunningProcesses": const([]),
        }

    def _const(self, value: object) -> Callable[..., Any]:
        """A device query that checks its handle as the driver does, then answers ``value``."""

        def query(handle: SimulatedGPU, *args: object) -> object:
            self._device(handle)
            return value

        return query

    def _require_init(self) -> None:
        if not self.initialized:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def _slice(self, handle: SimulatedMigSlice) -> SimulatedMigSlice:
        """A MIG slice after the checks on its board (which must hold it, in MIG mode)."""
        board = next((gpu for gpu in self.gpus if handle in gpu.mig_slices), None)
        if board is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        self._device(board)
        return handle

    def _device(self, handle: SimulatedGPU) -> SimulatedGPU:
        """The GPU behind a handle, after the checks the driver makes on every device call."""
        self._require_init()
        if not any(handle is gpu for gpu in self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if handle.fail_after_s is not None and time.monotonic() >= handle.fail_after_s:
            raise pynvml.NVMLError(handle.fail_with)
        return handle


def install_fake_nvml(
    monkeypatch: pytest.MonkeyPatch, gpus: Sequence[SimulatedGPU]
) -> SimulatedNVML:
    """Make ``pynvml`` see exactly these GPUs, in this order, until the test ends."""
    nvml = SimulatedNVML(gpus)
    nvml.install(monkeypatch)
    return nvml


def install_no_nvml(monkeypatch: pytest.MonkeyPatch, error: Exception | None = None) -> None:
    """Make ``nvmlInit`` fail as on a machine without the NVIDIA driver.

    ``error`` defaults to ``NVMLError_LibraryNotFound``; pass e.g. ``NVMLError_DriverNotLoaded()``
    or an ``OSError`` to simulate other ways the library fails to load.
    """
    failure = error if error is not None else pynvml.NVMLError_LibraryNotFound()

    def failing_init() -> None:
        raise failure

    monkeypatch.setattr(pynvml, "nvmlInit", failing_init)


_PYTHON_HELPERS = frozenset(
    {
        "nvmlErrorString",
        "nvmlExceptionClass",
        "nvmlFriendlyObjectToStruct",
        "nvmlStructToFriendlyObject",
    }
)
# Every pynvml function that calls the driver (not its classes, nor the helpers pynvml uses to
# build and name its errors), listed at import while pynvml is still the real one.
_DRIVER_CALLS = tuple(
    name
    for name, value in vars(pynvml).items()
    if name.startswith("nvml")
    and callable(value)
    and not isinstance(value, type)
    and name not in _PYTHON_HELPERS
)


def _not_supported(*args: object, **kwargs: object) -> Any:
    """A driver call the simulation does not answer: Not Supported, as an old board says."""
    raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
