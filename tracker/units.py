"""Units, readable figures and wall-clock labels that every layer shares.

Energies are joules and power watts throughout; ``J_PER_KWH`` converts to the kWh users read.
``format_energy``, ``format_power``, ``format_mass`` and ``format_hours`` write a figure in the
unit people read (kWh to GWh, kW to MW, g to t), ``format_energy_per`` and ``format_co2_per`` a
figure per sample or token (``J per 1k tokens``), ``-`` where it is unknown (NaN); a figure that
is not finite goes into JSON as null (``finite_or_none``). Wall-clock times are ISO-8601 UTC
labels with milliseconds in every file wattprint writes, and ``parse_utc`` reads them back (and
any ISO-8601 time with a timezone, or unix seconds) the same on every supported Python, through
``dateutil``'s ISO parser.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import TypeVar

from dateutil.parser import isoparse

J_PER_KWH = 3.6e6
"""Joules in a kilowatt-hour."""

_T = TypeVar("_T")


def finite_or_none(value: _T) -> _T | None:
    """``value`` as JSON may hold it: a NaN or infinite float becomes None (null), all else stays.

    ``run.json`` is written with ``allow_nan=False``, so a figure that was never measured (NaN)
    must reach it as null.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def utc_label(unix_s: float) -> str:
    """ISO-8601 UTC with milliseconds, the only wall-clock form the logs use."""
    stamp = datetime.fromtimestamp(unix_s, tz=timezone.utc)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_utc(text: str) -> float:
    """Unix seconds from ``utc_label``'s form or any ISO-8601 date and time with a timezone.

    Accepts extended and basic forms (``2026-01-01T12:00:00Z``, ``20260101T120000Z``), a space
    for the ``T``, fractions (``12:00:00.5``), offsets ``Z``, ``+01``, ``+01:00`` and ``+0100``,
    and plain unix seconds (``1767268800``). Anything else, or a time without a timezone, raises
    ``ValueError`` naming the text.
    """
    text = str(text).strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise ValueError(f"timestamp {text!r} is not a finite number of unix seconds")
        return value
    try:
        stamp: datetime = isoparse(text)
    except (ValueError, OverflowError) as error:
        raise ValueError(
            f"timestamp {text!r} is not a valid date and time, neither ISO-8601 nor unix "
            f"seconds ({error}; "
            "accepted: 2026-01-01T12:00:00Z, 2026-01-01 12:00:00.5+01:00, 20260101T120000Z, "
            "1767268800)"
        ) from None
    if stamp.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no timezone (add Z or +00:00)")
    return stamp.timestamp()


def figure(value: float | None, spec: str = ".4g") -> str:
    """A figure for a line of text; ``n/a`` where it was not measured (never a silent 0)."""
    return "n/a" if value is None or math.isnan(value) else format(value, spec)


def format_number(value: float, digits: int = 6) -> str:
    """``value`` to ``digits`` significant digits, without exponent or trailing zeros.

    Thousands are separated by commas; a NaN or infinite value (unknown) reads ``-``.
    """
    if not math.isfinite(value):
        return "-"
    if value == round(value) and abs(value) < 1e15:
        return f"{round(value):,}"
    rounded = float(f"{value:.{digits}g}")
    if rounded == round(rounded) and abs(rounded) >= 10 ** (digits - 1):
        return f"{round(rounded):,}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:,.{decimals}f}".rstrip("0").rstrip(".")


def format_power(watts: float, digits: int = 6) -> str:
    """Power in kW, or MW from 1,000 kW; ``-`` when unknown."""
    return _scaled(watts / 1e3, digits, (("MW", 1e3), ("kW", 1.0)))


def format_energy(joules: float, digits: int = 6) -> str:
    """Energy in kWh, or MWh / GWh from 1,000 kWh / 1,000 MWh; ``-`` when unknown."""
    return _scaled(joules / J_PER_KWH, digits, (("GWh", 1e6), ("MWh", 1e3), ("kWh", 1.0)))


def format_mass(grams: float, digits: int = 6) -> str:
    """A CO2e mass in g, kg from 1,000 g, t from 1,000 kg; ``-`` when unknown."""
    return _scaled(grams, digits, (("t", 1e6), ("kg", 1e3), ("g", 1.0)))


def format_hours(seconds: float, digits: int = 6) -> str:
    """A duration in hours, with days alongside from 48 h; ``-`` when unknown."""
    hours = seconds / 3600
    if not math.isfinite(hours):
        return "-"
    days = f" ({format_number(hours / 24, 3)} days)" if hours >= 48 else ""
    return f"{format_number(hours, digits)} h{days}"


_PER_COUNTS = ((1.0, ""), (1e3, "1k"), (1e6, "1M"), (1e9, "1B"))
"""How many units of work a per-unit figure is written for: one, a thousand, a million, ..."""


def format_energy_per(joules: float | None, unit: str, like: float | None = None) -> str:
    """Energy per unit of work as it reads best: ``3.2 J/sample``, ``41.5 J per 1k tokens``.

    The figure is written for one ``unit``, or the fewest thousands of them that reach 1 J, in
    J, Wh or kWh; ``-`` when unknown. ``like`` picks the count and unit in place of ``joules``,
    so figures set side by side (``wattprint compare``) share them.
    """
    return _per(joules, unit, (("kWh", J_PER_KWH), ("Wh", 3600.0), ("J", 1.0)), like)


def format_co2_per(grams: float | None, unit: str) -> str:
    """gCO2e per unit of work as it reads best: ``1.2 gCO2e per 1M tokens``; ``-`` when unknown."""
    return _per(grams, unit, (("tCO2e", 1e6), ("kgCO2e", 1e3), ("gCO2e", 1.0)))


def _per(
    value: float | None, unit: str, sizes: tuple[tuple[str, float], ...], like: float | None = None
) -> str:
    if value is None or not math.isfinite(value) or value < 0:
        return "-"
    ref = value if like is None or not math.isfinite(like) or like < 0 else like
    count, label = next(
        ((c, n) for c, n in _PER_COUNTS if ref == 0 or ref * c >= sizes[-1][1]),
        _PER_COUNTS[-1],
    )
    amount = _scaled(value * count, 4, sizes, ref * count)
    return f"{amount}/{unit}" if count == 1 else f"{amount} per {label} {unit}s"


def _scaled(
    value: float, digits: int, units: tuple[tuple[str, float], ...], like: float | None = None
) -> str:
    """``value`` in the largest of ``units`` it reaches (the last below them all); ``-`` if unknown.

    ``units`` are (name, size in ``value``'s unit) pairs, largest first; ``like``, where given,
    picks the unit in place of ``value``.
    """
    if not math.isfinite(value):
        return "-"
    ref = abs(value if like is None else like)
    unit, size = next(((u, s) for u, s in units if ref >= s), units[-1])
    return f"{format_number(value / size, digits)} {unit}"
