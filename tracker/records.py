"""The records a run produces: one per device per epoch, one per epoch, one per run.

Figures are joules, seconds and watts; ``None`` means "not measured" (never a silent zero).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from backends.base import Component, Method


@dataclass(frozen=True, slots=True)
class DeviceEnergy:
    """One device's energy over one epoch, and how it was obtained.

    ``method`` is the meter's method, or ``failed`` when the meter stopped working during or before
    this epoch (then ``energy_j`` covers only the time it still worked, or is None). ``co2_g`` is
    this device's share of the epoch's emissions (its energy x PUE x intensity over time), None
    where not measured or not recorded (rows read back from ``devices.csv``).
    ``energy_bound_j`` is the most ``energy_j`` can be off by, derived from the method (counter
    steps and edge placement, polling and the power swing seen, starved gaps); None for an
    estimate, which has no bound.
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
    co2_g: float | None = None
    # -- error bound (accuracy) --
    energy_bound_j: float | None = None  # |energy_j - truth| at most this; None: unbounded


@dataclass(frozen=True, slots=True)
class EpochRecord:
    """Energy and emissions of one epoch, as returned by ``Tracker.epoch_end()``.

    Component energies and ``it_energy_j`` are IT energy (before PUE); ``facility_energy_kwh`` is
    facility energy (after PUE); both are None when no component was measured (never a silent 0).
    ``other_energy_j`` is the rest of the node that a whole-node meter saw beyond the other
    components, None where there is no such meter. ``co2_g`` integrates power x intensity over
    the epoch, times PUE. ``start_s``/``end_s`` are the monotonic boundary times; ``partial``
    marks an epoch closed by a signal or an exception.
    ``it_energy_bound_j`` is the sum of the devices' energy bounds, None where one is unbounded.
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
    other_energy_j: float | None = None
    # Work done in the epoch (``Tracker.add_work``, ``epoch_end(samples=, tokens=)``) and the IT
    # energy per unit of it, in J; None where it was not counted or no energy was measured.
    samples: int | None = None
    tokens: int | None = None
    it_energy_j_per_sample: float | None = None
    it_energy_j_per_token: float | None = None
    # -- error bound (accuracy) --
    it_energy_bound_j: float | None = None  # sum of the devices' bounds; None if one is unbounded

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
    other_energy_j: float | None = None  # the rest of the node, where a whole-node meter exists
    # Work over the epochs that counted it, and the IT energy (J) and gCO2e per unit over those
    # of them that were measured; None where no epoch counted it.
    samples: int | None = None
    tokens: int | None = None
    it_energy_j_per_sample: float | None = None
    it_energy_j_per_token: float | None = None
    co2_g_per_sample: float | None = None
    co2_g_per_token: float | None = None


PREDICTION_METHOD = (
    "mean of the completed epochs x epochs; range: remaining epochs all like the cheapest / "
    "the costliest epoch so far"
)


@dataclass(frozen=True, slots=True)
class Prediction:
    """The whole run's predicted duration, energy and emissions, each with a low-high range."""

    epochs: int
    based_on_epochs: int
    duration_s: float
    duration_low_s: float
    duration_high_s: float
    it_energy_j: float
    it_energy_low_j: float
    it_energy_high_j: float
    facility_energy_kwh: float
    facility_energy_low_kwh: float
    facility_energy_high_kwh: float
    co2_g: float
    co2_low_g: float
    co2_high_g: float
    method: str = PREDICTION_METHOD


@dataclass(frozen=True, slots=True)
class PredictionCheck:
    """The run's actual figures against its prediction.

    ``*_error`` is the relative difference actual/predicted - 1 (+0.05: 5% above the prediction),
    taken per epoch when the run did not run exactly the predicted epochs, and None where the
    prediction was 0. ``energy_in_range`` says whether the actual IT energy fell within the
    predicted range; it is None unless the run completed exactly the predicted epochs and the
    prediction had a range (two or more epochs).
    """

    epochs_predicted: int
    epochs_run: int
    duration_s: float
    it_energy_j: float
    co2_g: float
    duration_error: float | None
    energy_error: float | None
    co2_error: float | None
    energy_in_range: bool | None
