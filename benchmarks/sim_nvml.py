"""A simulated NVML behind the ``pynvml`` module, shared by every tool measured in one process.

wattprint, carbontracker, CodeCarbon and Zeus all reach NVIDIA GPUs through ``pynvml``; replacing
its functions here points all four at the same simulated boards, so they are compared on one
source whose energy is known exactly. Each ``SimGPU`` behaves as NVML does on an H100: the total
energy counter steps every 100 ms and a read costs ~4 ms (a wait, not CPU work: the GIL is free);
``nvmlDeviceGetPowerUsage`` is the average over the last second, also refreshed every 100 ms, and
costs ~2 us. The power a board draws is a ``PowerTrace`` that the workload sets as it runs.
Functions not simulated answer NVML_ERROR_NOT_SUPPORTED, as an old board's driver would.
"""

from __future__ import annotations

import bisect
import math
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

import pynvml

COUNTER_STEP_S = 0.1
POWER_AVERAGE_S = 1.0
COUNTER_READ_S = 0.004
POWER_READ_S = 2e-6


class PowerTrace:
    """Piecewise-constant power over ``time.monotonic()``, appended to as the load changes.

    Reads and changes take the time under one lock, so a reader never integrates a span that a
    later change rewrites: the trace is exact for every moment up to now.
    """

    def __init__(self, watts: float) -> None:
        self._lock = threading.Lock()
        self._starts_s = [time.monotonic()]
        self._watts = [float(watts)]
        self._energy_j = [0.0]  # energy from the first start to each start

    def set(self, watts: float) -> float:
        """Draw ``watts`` from now on; returns the monotonic time of the change."""
        with self._lock:
            now = time.monotonic()
            if watts != self._watts[-1]:
                held_s = now - self._starts_s[-1]
                self._energy_j.append(self._energy_j[-1] + self._watts[-1] * held_s)
                self._starts_s.append(now)
                self._watts.append(float(watts))
            return now

    def energy_j(self, t0_s: float, t1_s: float) -> float:
        """The exact energy between two monotonic times, in joules."""
        with self._lock:
            return self._cumulative_j(t1_s) - self._cumulative_j(t0_s)

    def average_w(self, t0_s: float, t1_s: float) -> float:
        """The mean power over ``[t0_s, t1_s]``."""
        return self.energy_j(t0_s, t1_s) / (t1_s - t0_s) if t1_s > t0_s else self.power_w(t1_s)

    def power_w(self, t_s: float) -> float:
        """The power drawn at ``t_s``."""
        with self._lock:
            return self._watts[max(bisect.bisect_right(self._starts_s, t_s) - 1, 0)]

    def _cumulative_j(self, t_s: float) -> float:
        step = max(bisect.bisect_right(self._starts_s, t_s) - 1, 0)
        return self._energy_j[step] + self._watts[step] * (t_s - self._starts_s[step])


class SimGPU:
    """One simulated H100: its power trace and NVML's update grid and read costs."""

    def __init__(self, index: int, trace: PowerTrace, counter_read_s: float = COUNTER_READ_S):
        self.index = index
        self.trace = trace
        self.counter_read_s = counter_read_s
        self.name = "NVIDIA H100 80GB HBM3 (simulated)"
        self.uuid = f"GPU-00000000-0000-4000-8000-{index:012d}"
        # Boards do not update in step: give each its own phase on the 100 ms grid.
        self.grid_origin_s = time.monotonic() - 0.037 * (index + 1)

    def counter_mj(self, t_s: float) -> int:
        """What the energy counter reads at ``t_s``: whole mJ up to its last 100 ms update."""
        return math.floor(self.trace.energy_j(self.grid_origin_s, self.last_update_s(t_s)) * 1e3)

    def power_mw(self, t_s: float) -> int:
        """What ``nvmlDeviceGetPowerUsage`` reads at ``t_s``: the last second's mean, in mW."""
        update_s = self.last_update_s(t_s)
        return round(self.trace.average_w(update_s - POWER_AVERAGE_S, update_s) * 1e3)

    def last_update_s(self, t_s: float) -> float:
        """The latest moment on this board's 100 ms update grid at or before ``t_s``."""
        steps = math.floor((t_s - self.grid_origin_s) / COUNTER_STEP_S)
        return self.grid_origin_s + steps * COUNTER_STEP_S


class SimulatedNVML:
    """Installs simulated boards in place of ``pynvml``'s functions; ``uninstall`` restores them."""

    def __init__(self, gpus: Sequence[SimGPU]) -> None:
        self.gpus = list(gpus)
        self._saved: dict[str, Any] = {}
        self._inits = 0

    def install(self) -> SimulatedNVML:
        """Replace every ``nvml*`` function of ``pynvml``; those not simulated say Not Supported.

        Also puts an ``nvidia-smi`` that answers ``--help`` first on ``PATH``: CodeCarbon looks
        for that command before it asks NVML for GPUs.
        """
        _nvidia_smi_on_path()
        calls = self._calls()
        for name in dir(pynvml):
            if name.startswith("nvml") and callable(getattr(pynvml, name)):
                self._saved[name] = getattr(pynvml, name)
                setattr(pynvml, name, calls.get(name, _not_supported))
        return self

    def uninstall(self) -> None:
        """Give ``pynvml`` its real functions back."""
        for name, function in self._saved.items():
            setattr(pynvml, name, function)
        self._saved.clear()

    def _calls(self) -> dict[str, Callable[..., Any]]:
        gpu, const = self._gpu, self._const
        return {
            "nvmlInit": self._init,
            "nvmlInitWithFlags": lambda flags: self._init(),
            "nvmlShutdown": self._shutdown,
            "nvmlSystemGetDriverVersion": lambda: "580.00 (simulated)",
            "nvmlDeviceGetCount": lambda: self._ready() and len(self.gpus),
            "nvmlDeviceGetHandleByIndex": self._handle,
            "nvmlDeviceGetIndex": lambda h: gpu(h).index,
            "nvmlDeviceGetName": lambda h: gpu(h).name,
            "nvmlDeviceGetUUID": lambda h: gpu(h).uuid,
            "nvmlDeviceGetTotalEnergyConsumption": self._counter,
            "nvmlDeviceGetPowerUsage": lambda h: gpu(h).power_mw(time.monotonic()),
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
            "nvmlDeviceGetComputeRunningProcesses": const([]),
            "nvmlDeviceGetGraphicsRunningProcesses": const([]),
        }

    def _const(self, value: object) -> Callable[..., Any]:
        """A device query that checks its handle and answers ``value``."""

        def query(handle: object, *args: object) -> object:
            self._gpu(handle)
            return value

        return query

    def _init(self) -> None:
        self._inits += 1

    def _shutdown(self) -> None:
        self._inits = max(self._inits - 1, 0)

    def _ready(self) -> bool:
        if self._inits == 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)
        return True

    def _handle(self, index: int) -> SimGPU:
        self._ready()
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self.gpus[index]

    def _gpu(self, handle: object) -> SimGPU:
        self._ready()
        if not isinstance(handle, SimGPU):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return handle

    def _counter(self, handle: object) -> int:
        gpu = self._gpu(handle)
        started = time.monotonic()
        time.sleep(gpu.counter_read_s)  # the driver round trip; the value is taken mid-way
        return gpu.counter_mj(started + gpu.counter_read_s / 2)


def simulated_gpus(count: int, idle_w: float) -> list[SimGPU]:
    """``count`` boards, each drawing ``idle_w`` until the workload sets its trace."""
    return [SimGPU(i, PowerTrace(idle_w)) for i in range(count)]


def _nvidia_smi_on_path() -> None:
    folder = tempfile.mkdtemp(prefix="sim-nvidia-smi-")
    script = os.path.join(folder, "nvidia-smi")
    with open(script, "w") as file:
        file.write("#!/bin/sh\necho 'simulated nvidia-smi'\n")
    os.chmod(script, stat.S_IRWXU)
    os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")


def _not_supported(*args: object, **kwargs: object) -> Any:
    raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
