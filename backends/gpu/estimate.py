"""A GPU drawing a stated power: for machines without a readable GPU, or to simulate one.

This is carbontracker's simulated GPU (``sim_gpu``, ``sim_gpu_watts``, ``sim_gpu_util``): one
device drawing ``watts x utilisation`` for as long as it is sampled, reported as energy integrated
over time (see ``backends.estimate``). It measures nothing, so its method is ``estimate`` and its
``detail`` says where the figure came from.
"""

from __future__ import annotations

from backends.base import MeterInfo
from backends.estimate import ConstantPowerMeter, checked_number, checked_share

__all__ = ["GpuEstimateMeter"]


class GpuEstimateMeter(ConstantPowerMeter):
    """A named GPU drawing ``watts x utilisation`` (W): energy in J since creation, power x time."""

    def __init__(
        self, model: str, watts: float, utilisation: float, device: str = "gpu0", detail: str = ""
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"model must be a non-empty GPU name, got {model!r}")
        power_w = checked_number("watts", watts, "W", zero_ok=True)
        power_w *= checked_share("utilisation", utilisation)
        info = MeterInfo(
            device=device,
            component="gpu",
            model=model.strip(),
            method="estimate",
            host_level=False,
            detail=detail or f"{watts:g} W x utilisation {utilisation:g} (given)",
            scope="an estimate of the GPU board (W x utilisation)",
        )
        super().__init__(info, power_w)
