"""A job's epochs from its processes' figures: what rank 0 and ``wattprint merge`` write.

Each process measures its own devices and prices them with its own intensity and PUE; a job epoch
is the sum of its processes' epochs with the same number. Energies are summed per component, the
facility energy (``energy_kwh``) and ``co2_g`` are summed per process (so each keeps its own PUE
and grid), ``duration_s`` is the longest process's epoch (each measured on its own monotonic clock),
``pue`` and ``intensity_g_per_kwh`` are the effective ratios of those sums, and ``gpu_peak_w`` is
the sum of the GPUs' peaks (an upper bound: the peaks need not coincide). Work (samples, tokens)
is summed over the processes that counted it: each counts its own share of the batches.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from backends.base import COMPONENTS, Component
from tracker.measure.epochs import (
    effective_pue,
    facility_kwh_of,
    intensity_of,
    methods,
    per_unit,
    sum_optional,
    summed_bound,
)
from tracker.records import DeviceEnergy, EpochRecord
from tracker.units import finite_or_none


@dataclass(frozen=True, slots=True)
class RankEpoch:
    """One process's figures for one epoch, as it posts them to rank 0 or merge reads them back.

    ``rank`` and ``host`` say which process on which machine; ``devices`` are the devices it
    measured; ``co2_g`` is its emissions for those devices (its own intensity, times its PUE).
    """

    rank: int
    host: str
    epoch: int
    start_utc: str
    end_utc: str
    duration_s: float
    pue: float
    intensity_g_per_kwh: float
    co2_g: float | None
    partial: bool
    devices: tuple[DeviceEnergy, ...]
    samples: int | None = None  # the work this process counted (None: not counted)
    tokens: int | None = None

    @property
    def it_energy_j(self) -> float | None:
        """The IT energy of the devices this process measured; None when it measured none."""
        return sum_optional(d.energy_j for d in self.devices)

    @classmethod
    def from_record(cls, record: EpochRecord, rank: int, host: str) -> RankEpoch:
        """This process's ``EpochRecord`` as its part of the job's epoch."""
        return cls(
            rank=rank,
            host=host,
            epoch=record.epoch,
            start_utc=record.start_utc,
            end_utc=record.end_utc,
            duration_s=record.duration_s,
            pue=record.pue,
            intensity_g_per_kwh=record.intensity_g_per_kwh,
            co2_g=record.co2_g,
            partial=record.partial,
            devices=record.devices,
            samples=record.samples,
            tokens=record.tokens,
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready form (NaN intensity becomes null)."""
        document = dataclasses.asdict(self)
        document["intensity_g_per_kwh"] = finite_or_none(self.intensity_g_per_kwh)
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> RankEpoch:
        """The inverse of ``to_json``."""
        fields = dict(document)
        fields["devices"] = tuple(DeviceEnergy(**d) for d in fields["devices"])
        if fields["intensity_g_per_kwh"] is None:
            fields["intensity_g_per_kwh"] = math.nan
        return cls(**fields)

    def keeping(self, keep: Iterable[DeviceEnergy]) -> RankEpoch:
        """This part with only the ``keep`` devices, its CO2 repriced at its own intensity."""
        kept = tuple(keep)
        if len(kept) == len(self.devices):
            return self
        kept_j = sum_optional(d.energy_j for d in kept)
        all_j, co2_g = self.it_energy_j, self.co2_g
        # kept J x PUE x this process's mean intensity over the epoch:
        if kept_j is None or co2_g is None:
            co2_g = None
        elif all_j:
            co2_g = co2_g * kept_j / all_j
        return dataclasses.replace(self, devices=kept, co2_g=co2_g)


def combine(
    run_id: str,
    epoch: int,
    parts: Sequence[RankEpoch],
    components: Sequence[Component],
    complete: bool = True,
) -> EpochRecord:
    """The job's record for one epoch from its processes' parts (``complete=False``: some missing).

    The record's ``start_s``/``end_s`` are 0 and ``duration_s``: monotonic clocks of different
    machines cannot be compared, so a job record carries only its UTC labels.
    """
    devices = tuple(d for part in sorted(parts, key=lambda p: p.rank) for d in part.devices)
    by_component = {
        c: sum_optional(d.energy_j for d in devices if d.component == c) for c in COMPONENTS
    }
    it_energy_j = sum_optional(by_component.values())
    facility_kwh = sum_optional(facility_kwh_of(p.it_energy_j, p.pue) for p in parts)
    co2_g = sum_optional(p.co2_g for p in parts)
    duration_s = max((p.duration_s for p in parts), default=0.0)
    first = min(parts, key=lambda p: p.rank) if parts else None
    pue = effective_pue(it_energy_j, facility_kwh, first.pue if first else 1.0)
    intensity = intensity_of(co2_g, facility_kwh)
    if math.isnan(intensity):
        intensity = _mean(p.intensity_g_per_kwh for p in parts)
    gpus = [d for d in devices if d.component == "gpu" and d.energy_j is not None]
    gpu_j = by_component["gpu"]
    samples, tokens = sum_optional(p.samples for p in parts), sum_optional(p.tokens for p in parts)
    return EpochRecord(
        run_id=run_id,
        epoch=epoch,
        start_utc=min((p.start_utc for p in parts), default=""),
        end_utc=max((p.end_utc for p in parts), default=""),
        start_s=0.0,
        end_s=duration_s,
        duration_s=duration_s,
        gpu_energy_j=gpu_j,
        cpu_energy_j=by_component["cpu"],
        dram_energy_j=by_component["dram"],
        other_energy_j=by_component["other"],
        it_energy_j=it_energy_j,
        pue=pue,
        facility_energy_kwh=facility_kwh,
        intensity_g_per_kwh=intensity,
        co2_g=co2_g,
        gpu_avg_w=gpu_j / duration_s if gpu_j is not None and duration_s > 0 else None,
        gpu_peak_w=sum(d.peak_w for d in gpus if d.peak_w is not None) if gpus else None,
        methods=methods(devices, components),
        devices=devices,
        partial=not complete or any(p.partial for p in parts),
        samples=samples,
        tokens=tokens,
        it_energy_j_per_sample=per_unit(it_energy_j, samples),
        it_energy_j_per_token=per_unit(it_energy_j, tokens),
        it_energy_bound_j=summed_bound(devices),
    )


def _mean(values: Iterable[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan
