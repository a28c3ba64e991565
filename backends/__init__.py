"""Hardware meters: each module reads one kind of energy or power source behind `Meter`."""

from backends.base import (
    Found,
    Meter,
    MeterError,
    MeterInfo,
    MeterPermissionError,
    MeterReadError,
    MeterUnavailable,
    Missing,
    Reading,
)

__all__ = [
    "Found",
    "Meter",
    "MeterError",
    "MeterInfo",
    "MeterPermissionError",
    "MeterReadError",
    "MeterUnavailable",
    "Missing",
    "Reading",
]
