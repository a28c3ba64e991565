"""What an estimate is (``Estimate``, ``Quantity``) and how it is priced: PUE, location, intensity.

Facility energy is IT energy x PUE; emissions are facility kWh x grid intensity (g/kWh). PUE
defaults as the tracker's does: the cloud provider's figure for a cloud region, else 1.0; a PUE
given explicitly (or a recorded run's own) stays with the option wherever it is re-priced.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from tracker.carbon.intensity import parse_intensity
from tracker.carbon.pricing import validate_pue
from tracker.estimation.data import DeviceLoad
from tracker.units import J_PER_KWH

__all__ = ["Estimate", "Form", "Quantity", "non_negative", "positive", "priced"]

Form = Literal["hardware", "device-hours", "model", "run"]


@dataclass(frozen=True, slots=True)
class Quantity:
    """One intermediate quantity of an estimate: its value in ``unit``, and how it was obtained."""

    name: str
    value: float
    unit: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class Estimate:
    """The energy and emissions of one option, with the quantities that led to them.

    ``energy_j`` is IT energy (what the devices draw); ``facility_energy_j`` includes the PUE.
    ``co2_g`` is None where no location or intensity was given. ``power_w``, ``duration_s`` and
    ``device_hours`` are None where the form does not determine them.
    """

    form: Form
    label: str
    energy_j: float
    pue: float
    pue_source: str
    power_w: float | None = None
    duration_s: float | None = None
    device_hours: float | None = None
    location: str | None = None
    intensity_g_per_kwh: float | None = None
    intensity_source: str = ""
    devices: tuple[DeviceLoad, ...] = ()
    steps: tuple[Quantity, ...] = ()

    @property
    def facility_energy_j(self) -> float:
        """IT energy x PUE, in J."""
        return self.energy_j * self.pue

    @property
    def energy_kwh(self) -> float:
        """IT energy in kWh."""
        return self.energy_j / J_PER_KWH

    @property
    def facility_energy_kwh(self) -> float:
        """Facility energy (IT x PUE) in kWh."""
        return self.facility_energy_j / J_PER_KWH

    @property
    def co2_g(self) -> float | None:
        """gCO2e: facility kWh x intensity, or None without an intensity."""
        if self.intensity_g_per_kwh is None:
            return None
        return self.facility_energy_kwh * self.intensity_g_per_kwh

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: every field, the derived totals, and units in the key names."""
        data = asdict(self)
        data.update(
            energy_kwh=self.energy_kwh,
            facility_energy_j=self.facility_energy_j,
            facility_energy_kwh=self.facility_energy_kwh,
            co2_g=self.co2_g,
            hours=None if self.duration_s is None else self.duration_s / 3600,
        )
        for device, load in zip(data["devices"], self.devices, strict=True):
            device["power_w"] = load.power_w
        return data


def priced(
    option: Estimate,
    pue: float | None,
    location: str | None = None,
    intensity: float | None = None,
) -> Estimate:
    """``option`` with PUE, location and intensity set, and the pricing steps appended."""
    if location is not None and intensity is not None:
        raise ValueError("give a location or an intensity, not both")
    code, g_per_kwh, source, default_pue = None, None, "", None
    if location is not None:
        from tracker.carbon.locations import resolve

        place = resolve(location)
        code, g_per_kwh, default_pue = place.code, place.g_per_kwh, place.default_pue
        source = f"{place.name} ({place.code}), {place.year}: {place.source}; {place.basis}"
    elif intensity is not None:
        g_per_kwh = parse_intensity(intensity)
        source = "given"
    if pue is not None:
        factor, pue_source = validate_pue(pue), "given"
    elif option.pue_source in _KEPT_PUE:  # an explicit PUE follows the option to any location
        factor, pue_source = option.pue, option.pue_source
    elif default_pue:
        factor, pue_source = default_pue, f"default for {code}'s provider"
    else:
        factor, pue_source = 1.0, "not applied (no PUE given)"
    steps = [s for s in option.steps if not s.name.startswith(_PRICING_STEPS)]
    steps += [
        Quantity("IT energy E", option.energy_j / J_PER_KWH, "kWh"),
        Quantity("PUE", factor, "", pue_source),
        Quantity("facility energy E x PUE", option.energy_j * factor / J_PER_KWH, "kWh"),
    ]
    if g_per_kwh is not None:
        co2_g = option.energy_j * factor / J_PER_KWH * g_per_kwh
        steps += [
            Quantity("grid intensity", g_per_kwh, "g/kWh", source),
            Quantity("emissions", co2_g, "gCO2e", "facility kWh x intensity"),
        ]
    return replace(
        option,
        pue=factor,
        pue_source=pue_source,
        location=code,
        intensity_g_per_kwh=g_per_kwh,
        intensity_source=source,
        steps=tuple(steps),
    )


_KEPT_PUE = ("given", "the run's")
_PRICING_STEPS = ("IT energy E", "PUE", "facility energy", "grid intensity", "emissions")


def non_negative(name: str, value: float) -> float:
    """``value`` as a float, if finite and >= 0; else ``ValueError`` naming ``name``."""
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def positive(name: str, value: float) -> float:
    """``value`` as a float, if finite and > 0; else ``ValueError`` naming ``name``."""
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return float(value)
