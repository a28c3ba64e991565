"""The records a run produces: one per device per epoch, one per epoch, one per run.

Figures are joules, seconds and watts; ``None`` means "not measured" (never a silent zero).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from backends.base import Component, Method

if TYPE_CHECKING:
    from tracker.measure.predict import Prediction, PredictionCheck


@dataclass(frozen=True, slots=True)
class DeviceEnergy:
    """One device's energy over one epoch, and how it was obtained.

    ``method`` is the meter's method, or ``failed`` when the meter stopped working during or before
    this epoch (then ``energy_j`` covers only the time it still worked, or is None).
    """

    device: str
    component: Component
    model: str
    method: Method | str
    energy_j: float | None
    avg_w: float | None
    peak_w: float | None
    host: str
    rank: int


@dataclass(frozen=True, slots=True)
class EpochRecord:
    """Energy and emissions of one epoch, as returned by ``Tracker.epoch_end()``.

    Component energies and ``it_energy_j`` are IT energy (before PUE); ``facility_energy_kwh`` is
    facility energy (after PUE); both are None when no component was measured (never a silent 0);
    ``co2_g`` integrates power x intensity over the epoch, times PUE. ``start_s``/``end_s`` are the
    monotonic boundary times; ``partial`` marks an epoch closed by a signal or an exception.
    """

    run_id: str
    epoch: int
    start_utc: str
    end_utc: str
    start_s: float
    end_s: float
    duration_s: float
    gpu_energy_j: float | None
    cpu_energy_j: float | None
    dram_energy_j: float | None
    it_energy_j: float | None
    pue: float
    facility_energy_kwh: float | None
    intensity_g_per_kwh: float
    co2_g: float | None
    gpu_avg_w: float | None
    gpu_peak_w: float | None
    methods: str
    devices: tuple[DeviceEnergy, ...] = ()
    partial: bool = False

    def component_energy_j(self, component: Component) -> float | None:
        """The energy of one component this epoch, or None where it was not measured."""
        value: float | None = getattr(self, f"{component}_energy_j")
        return value


@dataclass(frozen=True, slots=True)
class RunSummary:
    """Totals of a run: what ``Tracker.summary`` returns and ``run.json`` records.

    Energies and ``co2_g`` are None when nothing was measured in any epoch (never a silent 0).
    """

    run_id: str
    run_dir: str
    epochs: int
    duration_s: float
    gpu_energy_j: float | None
    cpu_energy_j: float | None
    dram_energy_j: float | None
    it_energy_j: float | None
    pue: float
    facility_energy_kwh: float | None
    co2_g: float | None
    intensity_g_per_kwh: float
    intensity_source: str
    methods: str
    missing: tuple[str, ...] = ()
    warnings: tuple[str, ...] = field(default_factory=tuple)
    prediction: Prediction | None = None  # made after epochs_before_pred epochs, when epochs=N
    prediction_check: PredictionCheck | None = None  # the actual epochs against it
