"""Units, readable figures and wall-clock labels that every layer shares.

Energies are joules and power watts throughout; ``J_PER_KWH`` converts to the kWh users read.
``format_energy``, ``format_power``, ``format_mass`` and ``format_hours`` write a figure in the
unit people read (kWh to GWh, kW to MW, g to t), ``-`` where it is unknown (NaN); a figure that
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


def _scaled(value: float, digits: int, units: tuple[tuple[str, float], ...]) -> str:
    """``value`` in the largest of ``units`` it reaches (the last below them all); ``-`` if unknown.

    ``units`` are (name, size in ``value``'s unit) pairs, largest first.
    """
    if not math.isfinite(value):
        return "-"
    unit, size = next(((u, s) for u, s in units if abs(value) >= s), units[-1])
    return f"{format_number(value / size, digits)} {unit}"
