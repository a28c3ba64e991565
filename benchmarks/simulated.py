"""Simulated meters for benchmarks: a GPU whose energy counter read is slow, like NVML's."""

from __future__ import annotations

import time

from backends.base import Meter, MeterInfo, Reading


class SlowCounterGPU(Meter):
    """A GPU drawing constant power whose counter read takes ``read_cost_s`` (NVML: ~4 ms)."""

    fast = False

    def __init__(self, index: int, power_w: float = 300.0, read_cost_s: float = 0.004) -> None:
        self.info = MeterInfo(f"gpu{index}", "gpu", "simulated H100", "counter", False)
        self.power_w = power_w
        self.read_cost_s = read_cost_s
        self._origin_s = time.monotonic()

    def read(self) -> Reading:
        time.sleep(self.read_cost_s)
        now = time.monotonic()
        return Reading(now, energy_j=(now - self._origin_s) * self.power_w)

    def power_hint_w(self) -> float:
        return self.power_w

    def truth_j(self, start_s: float, end_s: float) -> float:
        """The exact energy drawn between two monotonic times."""
        return (end_s - start_s) * self.power_w
