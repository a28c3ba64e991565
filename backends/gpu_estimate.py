"""A GPU drawing a stated power: for machines without a readable GPU, or to simulate one.

This is carbontracker's simulated GPU (``sim_gpu``, ``sim_gpu_watts``, ``sim_gpu_util``): one
device drawing ``watts x utilisation`` for as long as it is sampled. It measures nothing, so its
method is ``estimate`` and its ``detail`` says where the figure came from.
"""

from __future__ import annotations

import math
import time

from backends.base import Meter, MeterInfo, Reading

__all__ = ["GpuEstimateMeter"]


class GpuEstimateMeter(Meter):
    """Constant power ``watts x utilisation`` for a named GPU; read by the sampler thread only."""

    fast = False  # an estimate gains nothing from a read on the training thread

    def __init__(
        self, model: str, watts: float, utilisation: float, device: str = "gpu0", detail: str = ""
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be a non-empty GPU name, got {model!r}")
        if isinstance(watts, bool) or not isinstance(watts, int | float) or not watts >= 0:
            raise ValueError(f"watts must be a number of watts >= 0, got {watts!r}")
        if not math.isfinite(watts):
            raise ValueError(f"watts must be finite, got {watts!r}")
        if isinstance(utilisation, bool) or not isinstance(utilisation, int | float):
            raise ValueError(f"utilisation must be a number between 0 and 1, got {utilisation!r}")
        if not 0.0 <= utilisation <= 1.0:
            raise ValueError(f"utilisation must be between 0 and 1, got {utilisation!r}")
        self.power_w = float(watts) * float(utilisation)
        self.info = MeterInfo(
            device=device,
            component="gpu",
            model=model.strip(),
            method="estimate",
            host_level=False,
            detail=detail or f"{watts:g} W x utilisation {utilisation:g} (given)",
        )

    def read(self) -> Reading:
        """The stated power, stamped with the time of the read."""
        return Reading(t_s=time.monotonic(), power_w=self.power_w)
