"""Everyday equivalents of an amount of CO2e, and what offsetting it would cost.

Each factor is the published figure of a public source; the table below is the one place they
live. Equivalents are illustrations, not an accounting method.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

G_PER_TONNE = 1_000_000.0
KM_PER_MILE = 1.609344
LITRES_PER_US_GALLON = 3.785411784

# US EPA, Report on the Social Cost of Greenhouse Gases (Nov 2023): social cost of CO2 for 2020
# emissions at a 2% near-term discount rate, in 2020 US dollars per metric tonne. A damage-cost
# estimate, deliberately on the high side of offset prices: pass your provider's price instead.
DEFAULT_PRICE_PER_TONNE_USD = 190.0

_EPA = "US EPA, Greenhouse Gas Equivalencies Calculator, calculations and references (2024)"

# (label, g CO2e per unit, unit, source)
FACTORS: tuple[tuple[str, float, str, str], ...] = (
    (
        "driven by an average US gasoline passenger vehicle",
        393.0 / KM_PER_MILE,
        "km",
        f"{_EPA}: 3.93e-4 t CO2e per mile; converted at {KM_PER_MILE} km per mile",
    ),
    (
        "driven by an average new car sold in Europe in 2023 (type-approval)",
        106.6,
        "km",
        "European Environment Agency, CO2 emissions from new passenger cars, 2023 provisional "
        "data: 106.6 g CO2/km (EU-27, Iceland, Norway; WLTP, tailpipe)",
    ),
    (
        "of gasoline burned",
        8887.0 / LITRES_PER_US_GALLON,
        "litres",
        f"{_EPA}: 8,887 g CO2 per US gallon; converted at {LITRES_PER_US_GALLON} L per gallon",
    ),
    (
        "of a smartphone",
        12.4,
        "full charges",
        f"{_EPA}: 1.24e-5 t CO2 per smartphone charged",
    ),
    (
        "grown for 10 years to absorb it (urban trees)",
        60_000.0,
        "tree seedlings",
        f"{_EPA}: 0.060 t CO2 per urban tree seedling grown for 10 years",
    ),
)


@dataclass(frozen=True, slots=True)
class Equivalent:
    """Reads as f"{value:.3g} {unit} {label}": "4.09 km driven by an average US gasoline ..."."""

    label: str
    value: float
    unit: str
    source: str


def equivalents(co2_g: float) -> list[Equivalent]:
    """Everyday equivalents of ``co2_g`` grams of CO2e, one per factor in ``FACTORS``."""
    grams = _non_negative("co2_g", co2_g)
    return [
        Equivalent(label, grams / g_per_unit, unit, source)
        for label, g_per_unit, unit, source in FACTORS
    ]


def offset_cost(
    co2_g: float, price_per_tonne: float = DEFAULT_PRICE_PER_TONNE_USD, currency: str = "USD"
) -> float:
    """The cost of offsetting ``co2_g`` grams at ``price_per_tonne`` (in ``currency``) per t CO2e.

    The default price is the US EPA's 2023 social cost of CO2 (``DEFAULT_PRICE_PER_TONNE_USD``,
    in USD); ``currency`` only labels the price, so with another currency pass a price in it.
    """
    grams = _non_negative("co2_g", co2_g)
    price = _non_negative("price_per_tonne", price_per_tonne)
    if not (isinstance(currency, str) and len(currency) == 3 and currency.isalpha()):
        raise ValueError(
            f"currency must be a 3-letter ISO 4217 code such as 'EUR', got {currency!r}"
        )
    return grams / G_PER_TONNE * price


def _non_negative(name: str, value: float) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)
