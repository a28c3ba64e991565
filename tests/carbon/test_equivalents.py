"""Everyday equivalents and offset cost."""

from __future__ import annotations

import math

import pytest

from tracker.carbon.equivalents import (
    DEFAULT_PRICE_PER_TONNE_USD,
    FACTORS,
    Equivalent,
    equivalents,
    offset_cost,
)


def test_each_equivalent_divides_the_co2_by_its_published_factor() -> None:
    result = {e.unit + " " + e.label: e.value for e in equivalents(1000.0)}
    assert result["km driven by an average US gasoline passenger vehicle"] == pytest.approx(
        1000.0 / (393.0 / 1.609344)
    )
    assert result["km driven by an average new car sold in Europe in 2023 (type-approval)"] == (
        pytest.approx(1000.0 / 106.6)
    )
    assert result["full charges of a smartphone"] == pytest.approx(1000.0 / 12.4)
    assert result["litres of gasoline burned"] == pytest.approx(1000.0 / (8887.0 / 3.785411784))
    assert result["tree seedlings grown for 10 years to absorb it (urban trees)"] == (
        pytest.approx(1000.0 / 60_000.0)
    )


def test_one_kilogram_is_about_four_km_in_an_average_us_car() -> None:
    [us_km] = [e for e in equivalents(1000.0) if "US gasoline" in e.label]
    assert us_km.unit == "km"
    assert us_km.value == pytest.approx(4.095, abs=0.001)


def test_equivalents_scale_linearly_and_zero_gives_zeros() -> None:
    one = equivalents(1.0)
    many = equivalents(2500.0)
    assert [m.value for m in many] == pytest.approx([2500.0 * o.value for o in one])
    assert all(e.value == 0.0 for e in equivalents(0))


def test_every_factor_is_positive_and_cites_a_source() -> None:
    assert len(FACTORS) == len(equivalents(1.0)) == 5
    for label, g_per_unit, unit, source in FACTORS:
        assert g_per_unit > 0 and label and unit
        assert source.startswith(("US EPA", "European Environment Agency"))
    assert all(isinstance(e, Equivalent) and e.source for e in equivalents(1.0))


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
def test_equivalents_reject_negative_or_non_finite_co2_naming_co2_g(bad: float) -> None:
    with pytest.raises(ValueError, match=r"^co2_g must be"):
        equivalents(bad)


def test_offset_cost_is_tonnes_times_price() -> None:
    assert offset_cost(2_000_000.0, price_per_tonne=25.0, currency="EUR") == 50.0
    assert offset_cost(500.0, 10.0) == pytest.approx(0.005)
    assert offset_cost(0.0) == 0.0


def test_offset_cost_default_price_is_the_documented_epa_figure() -> None:
    assert DEFAULT_PRICE_PER_TONNE_USD == 190.0
    assert offset_cost(1_000_000.0) == 190.0


@pytest.mark.parametrize("bad", [-0.01, math.nan])
def test_negative_or_nan_price_is_an_error_naming_price_per_tonne(bad: float) -> None:
    with pytest.raises(ValueError, match=r"^price_per_tonne must be"):
        offset_cost(100.0, price_per_tonne=bad)


def test_offset_cost_rejects_negative_co2_and_malformed_currency() -> None:
    with pytest.raises(ValueError, match=r"^co2_g must be"):
        offset_cost(-5.0)
    with pytest.raises(ValueError, match=r"^currency must be"):
        offset_cost(5.0, 20.0, currency="euros")
