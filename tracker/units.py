"""Units and wall-clock labels that every layer shares.

Energies are joules and power watts throughout; ``J_PER_KWH`` converts to the kWh users read,
and a figure that is not finite goes into JSON as null (``finite_or_none``). Wall-clock times
are ISO-8601 UTC labels with milliseconds in every file wattprint writes, and ``parse_utc`` reads
them back (and any ISO-8601 time with a timezone, or unix seconds) the same on every supported
Python, through ``dateutil``'s ISO parser.
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
