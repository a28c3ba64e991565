"""Turns two boundary snapshots into an ``EpochRecord``: energy per device and component, CO2.

Pure arithmetic on what the sampler cut: the difference of each meter's cumulative figures. A meter
that had failed before the epoch began contributes ``None`` (not measured), never 0; one that failed
during it keeps what it measured and is marked ``failed``.

A meter whose reading contains other devices (``MeterInfo.minus``: a GH200 module holds its Grace
socket, a whole-node meter holds everything) gives its device only the rest: its reading less
theirs, method ``residual``. Module residuals are taken first, the whole node's last, so each
joule is counted once and the components plus ``other`` add up to the node's energy. A rest
below 0 (the meters disagree, e.g. a component's meter reads high) is 0, with a warning naming
both figures once per run; one whose own meter failed during the epoch is None (``failed``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

from backends.base import COMPONENTS, EVERY_OTHER_DEVICE, Component, Meter, MeterInfo
from tracker.carbon.pricing import Carbon
from tracker.measure.sampler import MeterSnapshot, epoch_bound_j
from tracker.notices import Notices
from tracker.records import DeviceEnergy, EpochRecord, RunSummary
from tracker.units import J_PER_KWH, utc_label

if TYPE_CHECKING:
    from tracker.records import Prediction, PredictionCheck

N = TypeVar("N", int, float)


def build_record(
    *,
    run_id: str,
    epoch: int,
    meters: Sequence[Meter],
    start: tuple[float, dict[str, MeterSnapshot]],
    end: tuple[float, dict[str, MeterSnapshot]],
    carbon: Carbon,
    components: Sequence[Component],
    host: str,
    rank: int,
    partial: bool,
    uncovered: Collection[Component] = (),
    samples: int | None = None,
    tokens: int | None = None,
    notices: Notices | None = None,
) -> EpochRecord:
    """The record of the epoch between two snapshots of the same meters.

    ``uncovered``: components some of whose devices have no meter (``methods`` then says
    ``+missing``, e.g. ``cpu=rapl+missing`` when only one of two packages can be read).
    ``samples``/``tokens``: the work counted in the epoch (None: not counted).
    ``notices`` gets the warning when a meter's reading falls short of the devices it contains.
    """
    (start_s, first), (end_s, last) = start, end
    duration_s = end_s - start_s
    measured = [
        _device_energy(m, first[m.info.device], last[m.info.device], duration_s, host, rank)
        for m in meters
    ]
    devices = residuals(measured, meters, epoch, duration_s, notices)
    co2_g = sum_optional(
        _co2_share(last[d.device].co2_g - first[d.device].co2_g, raw, d)
        for raw, d in zip(measured, devices, strict=True)
        if first[d.device].failed_at_s is None
    )
    by_component = {c: component_total(devices, c) for c in COMPONENTS}
    it_energy_j = sum_optional(by_component.values())
    facility_kwh = facility_kwh_of(it_energy_j, carbon.pue)
    intensity = intensity_of(co2_g, facility_kwh)
    if math.isnan(intensity):
        intensity = carbon.intensity(start_s, end_s)
    gpus = [d for d in devices if d.component == "gpu" and d.energy_j is not None]
    gpu_peak = sum(d.peak_w for d in gpus if d.peak_w is not None) if gpus else None
    return EpochRecord(
        run_id=run_id,
        epoch=epoch,
        start_utc=utc_label(carbon.to_unix(start_s)),
        end_utc=utc_label(carbon.to_unix(end_s)),
        start_s=start_s,
        end_s=end_s,
        duration_s=duration_s,
        gpu_energy_j=by_component["gpu"],
        cpu_energy_j=by_component["cpu"],
        dram_energy_j=by_component["dram"],
        other_energy_j=by_component["other"],
        it_energy_j=it_energy_j,
        pue=carbon.pue,
        facility_energy_kwh=facility_kwh,
        intensity_g_per_kwh=intensity,
        co2_g=co2_g,
        gpu_avg_w=rate(by_component["gpu"], duration_s),
        gpu_peak_w=gpu_peak,
        methods=methods(devices, components, uncovered),
        devices=devices,
        partial=partial,
        samples=samples,
        tokens=tokens,
        it_energy_j_per_sample=per_unit(it_energy_j, samples),
        it_energy_j_per_token=per_unit(it_energy_j, tokens),
        it_energy_bound_j=summed_bound(devices),
    )


class WorkTally:
    """One unit of work (samples or tokens) over a run's epochs, and the energy that did it.

    ``count`` sums every epoch that counted the unit (None: none did). The per-unit figures divide
    the IT energy and CO2 of the epochs that counted it and were measured by their count, so an
    epoch without a count (a validation epoch, say) neither inflates nor dilutes them.
    """

    def __init__(self) -> None:
        self.count: int | None = None
        self.priced = 0  # the units counted in measured epochs
        self.it_energy_j = 0.0
        self.co2_g: float | None = None

    def add(self, count: int | None, it_energy_j: float | None, co2_g: float | None) -> None:
        """Count one epoch's work, with its IT energy (J) and gCO2e."""
        if count is None:
            return
        self.count = sum_optional((self.count, count))
        if it_energy_j is not None:
            self.priced += count
            self.it_energy_j += it_energy_j
            self.co2_g = sum_optional((self.co2_g, co2_g))

    @property
    def it_energy_j_per_unit(self) -> float | None:
        """IT energy per unit of work in J; None where there is none to divide by."""
        return per_unit(self.it_energy_j, self.priced)

    @property
    def co2_g_per_unit(self) -> float | None:
        """gCO2e per unit of work; None where there is none to divide by."""
        return per_unit(self.co2_g, self.priced)


class Totals:
    """Running totals over epoch records, so a summary costs the same after 10 or 10,000 epochs.

    Sums over nothing measured stay None (never a silent 0). ``done_*`` count only the epochs
    that completed (not ``partial``), which a prediction is checked against.
    """

    def __init__(self) -> None:
        self.epochs = 0
        self.duration_s = 0.0
        self.component_j: dict[Component, float | None] = dict.fromkeys(COMPONENTS)
        self.it_energy_j: float | None = None
        self.facility_kwh: float | None = None
        self.co2_g: float | None = None
        self.methods = ""
        self.done_epochs = 0
        self.done_duration_s = 0.0
        self.done_it_energy_j = 0.0
        self.done_co2_g = 0.0
        self.samples = WorkTally()
        self.tokens = WorkTally()

    @classmethod
    def of(cls, records: Iterable[EpochRecord]) -> Totals:
        """The totals of ``records``."""
        totals = cls()
        for record in records:
            totals.add(record)
        return totals

    def add(self, record: EpochRecord) -> None:
        """Count one more epoch."""
        self.epochs += 1
        self.duration_s += record.duration_s
        for component in COMPONENTS:
            self.component_j[component] = sum_optional(
                (self.component_j[component], record.component_energy_j(component))
            )
        self.it_energy_j = sum_optional((self.it_energy_j, record.it_energy_j))
        self.facility_kwh = sum_optional((self.facility_kwh, record.facility_energy_kwh))
        self.co2_g = sum_optional((self.co2_g, record.co2_g))
        self.methods = record.methods
        self.samples.add(record.samples, record.it_energy_j, record.co2_g)
        self.tokens.add(record.tokens, record.it_energy_j, record.co2_g)
        if not record.partial:
            self.done_epochs += 1
            self.done_duration_s += record.duration_s
            self.done_it_energy_j += math.nan if record.it_energy_j is None else record.it_energy_j
            self.done_co2_g += math.nan if record.co2_g is None else record.co2_g


def summarise(
    run_id: str,
    run_dir: str,
    totals: Totals,
    intensity_source: str,
    *,
    missing: Sequence[str] = (),
    warnings: Sequence[str] = (),
    pue: float | None = None,
    nominal_intensity: float = math.nan,
    prediction: Prediction | None = None,
    prediction_check: PredictionCheck | None = None,
) -> RunSummary:
    """The run's summary from its running ``totals``, one process's or a whole job's.

    ``pue`` is the run's own; a job's records may carry several, and then the effective ratio of
    facility to IT energy is reported. ``nominal_intensity`` stands where no energy was measured.
    """
    it_energy_j, facility_kwh, co2_g = totals.it_energy_j, totals.facility_kwh, totals.co2_g
    if pue is None:
        pue = effective_pue(it_energy_j, facility_kwh, 1.0)
    intensity = intensity_of(co2_g, facility_kwh)
    return RunSummary(
        run_id=run_id,
        run_dir=run_dir,
        epochs=totals.epochs,
        duration_s=totals.duration_s,
        gpu_energy_j=totals.component_j["gpu"],
        cpu_energy_j=totals.component_j["cpu"],
        dram_energy_j=totals.component_j["dram"],
        other_energy_j=totals.component_j["other"],
        it_energy_j=it_energy_j,
        pue=pue,
        facility_energy_kwh=facility_kwh,
        co2_g=co2_g,
        intensity_g_per_kwh=nominal_intensity if math.isnan(intensity) else intensity,
        intensity_source=intensity_source,
        methods=totals.methods,
        missing=tuple(missing),
        warnings=tuple(warnings),
        prediction=prediction,
        prediction_check=prediction_check,
        samples=totals.samples.count,
        tokens=totals.tokens.count,
        it_energy_j_per_sample=totals.samples.it_energy_j_per_unit,
        it_energy_j_per_token=totals.tokens.it_energy_j_per_unit,
        co2_g_per_sample=totals.samples.co2_g_per_unit,
        co2_g_per_token=totals.tokens.co2_g_per_unit,
    )


def sum_optional(values: Iterable[N | None]) -> N | None:
    """The sum of the known values; None when none is known (never a silent 0)."""
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def per_unit(amount: float | None, count: int | None) -> float | None:
    """``amount`` per unit of work (J or g per sample or token); None without both, or with 0."""
    return amount / count if amount is not None and count else None


def facility_kwh_of(it_energy_j: float | None, pue: float) -> float | None:
    """Facility energy in kWh: IT energy in J times PUE; None where the IT energy is unknown."""
    return None if it_energy_j is None else it_energy_j * pue / J_PER_KWH


def effective_pue(it_energy_j: float | None, facility_kwh: float | None, default: float) -> float:
    """The ratio of facility to IT energy, or ``default`` where there is no IT energy."""
    if it_energy_j is None or facility_kwh is None or it_energy_j <= 0:
        return default
    return facility_kwh * J_PER_KWH / it_energy_j


def intensity_of(co2_g: float | None, facility_kwh: float | None) -> float:
    """The gCO2e per facility kWh the energy was priced at; NaN where there was no energy."""
    if co2_g is None or facility_kwh is None or facility_kwh <= 0:
        return math.nan
    return co2_g / facility_kwh


def rate(energy_j: float | None, duration_s: float) -> float | None:
    """Average power over a span, or None where the energy is unknown or the span empty."""
    return energy_j / duration_s if energy_j is not None and duration_s > 0 else None


def component_total(devices: Sequence[DeviceEnergy], component: Component) -> float | None:
    """A component's energy: the sum over its measured devices, None if none was measured."""
    return sum_optional([d.energy_j for d in devices if d.component == component])


def summed_bound(devices: Sequence[DeviceEnergy]) -> float | None:
    """The bound of the measured devices' summed energy; None where one is unbounded or none."""
    measured = [d for d in devices if d.energy_j is not None]
    if not measured or any(d.energy_bound_j is None for d in measured):
        return None
    return sum(d.energy_bound_j or 0.0 for d in measured)


def methods(
    devices: Sequence[DeviceEnergy],
    components: Sequence[Component],
    uncovered: Collection[Component] = (),
) -> str:
    """How each component was measured, e.g. ``gpu=counter;cpu=rapl@process;dram=estimate``.

    A meter giving the job's share of a shared device says how after ``@`` (``process``,
    ``attributed``, ``estimate``: see ``backends.attribution``).

    ``missing`` joins the methods of a component in ``uncovered`` (some of its devices have no
    meter), so a total over part of a component never passes for the whole. ``other`` is left
    out where no whole-node meter exists (there is nothing of it to measure).
    """
    parts = []
    for component in components:
        found = sorted({str(d.method) for d in devices if d.component == component})
        if component == "other" and not found and component not in uncovered:
            continue
        if found and component in uncovered:
            found.append("missing")
        parts.append(f"{component}={'+'.join(found) if found else 'none'}")
    return ";".join(parts)


def residuals(
    devices: Sequence[DeviceEnergy],
    meters: Sequence[Meter],
    epoch: int,
    duration_s: float,
    notices: Notices | None = None,
) -> tuple[DeviceEnergy, ...]:
    """``devices`` with each containing meter's figure reduced to what the others did not measure.

    Explicit ``minus`` lists (a module less its socket) first, ``EVERY_OTHER_DEVICE`` (the node
    less everything else) last, each from the figures as they stand by then.
    """
    result = {d.device: d for d in devices}
    containing = sorted(
        (m.info for m in meters if m.info.minus), key=lambda i: EVERY_OTHER_DEVICE in i.minus
    )
    for info in containing:
        own = result[info.device]
        if EVERY_OTHER_DEVICE in info.minus:
            parts = [d for d in result.values() if d.device != info.device]
        else:
            parts = [result[name] for name in info.minus if name in result]
        result[info.device] = _rest(own, parts, epoch, duration_s, notices)
    return tuple(result[d.device] for d in devices)


def _rest(
    own: DeviceEnergy,
    parts: Sequence[DeviceEnergy],
    epoch: int,
    duration_s: float,
    notices: Notices | None,
) -> DeviceEnergy:
    """``own``'s energy less the ``parts`` measured in it, never below 0 (see module docstring)."""
    if own.energy_j is None or own.method == "failed":
        return dataclasses.replace(own, method="failed", energy_j=None, avg_w=None, peak_w=None)
    measured = [d for d in parts if d.energy_j is not None]
    inside_j = sum(d.energy_j for d in measured if d.energy_j is not None)
    rest_j = own.energy_j - inside_j
    if rest_j < 0 and notices is not None:
        names = ", ".join(d.device for d in measured)
        notices.warn(
            f"residual:{own.device}",
            f"epoch {epoch}: {own.device} ({own.model}) measured {own.energy_j:.1f} J, but the "
            f"devices inside it ({names}) measured {inside_j:.1f} J together; the meters "
            f"disagree, so {own.device}'s rest is 0 J in such epochs (said once per run)",
        )
    rest_j = max(rest_j, 0.0)
    return dataclasses.replace(
        own, method="residual", energy_j=rest_j, avg_w=rate(rest_j, duration_s), peak_w=None
    )


def _co2_share(co2_g: float, measured: DeviceEnergy, kept: DeviceEnergy) -> float | None:
    """A device's gCO2e: all of its meter's where its figure is the meter's, else in proportion."""
    if kept is measured:
        return co2_g
    if kept.energy_j is None or measured.energy_j is None:
        return None
    return co2_g * kept.energy_j / measured.energy_j if measured.energy_j > 0 else 0.0


def method_label(info: MeterInfo) -> str:
    """A meter's method with the job's attribution, if any: ``rapl``, ``rapl@process``."""
    return f"{info.method}@{info.attribution}" if info.attribution else info.method


def _device_energy(
    meter: Meter,
    start: MeterSnapshot,
    end: MeterSnapshot,
    duration_s: float,
    host: str,
    rank: int,
) -> DeviceEnergy:
    info = meter.info
    energy_j = None if start.failed_at_s is not None else end.energy_j - start.energy_j
    avg_w = rate(energy_j, duration_s)
    peak_w = end.peak_w if end.peak_w is not None else avg_w
    if peak_w is not None and avg_w is not None:
        peak_w = max(peak_w, avg_w)
    bound_j = None if energy_j is None else epoch_bound_j(start, end)
    return DeviceEnergy(
        device=info.device,
        component=info.component,
        model=info.model,
        method="failed" if end.failed_at_s is not None else method_label(info),
        energy_j=energy_j,
        avg_w=avg_w,
        peak_w=peak_w if energy_j is not None else None,
        host=host,
        rank=rank,
        co2_g=None if energy_j is None else end.co2_g - start.co2_g,
        energy_bound_j=bound_j,
    )
