"""What estimates are built from: device ratings, accelerator throughput, parsed inputs, units.

Ratings come from the bundled hardware tables (``backends.specs``); peak dense throughput per
accelerator and precision from ``tracker/data/accelerator_throughput.csv``, each value with its
vendor source. Readable units (kW/MW, kWh/MWh/GWh, g/kg/t) come from ``tracker.units``.
Intensities are parsed by ``tracker.carbon.intensity.parse_intensity``, as for a run.
"""

from __future__ import annotations

import csv
import functools
import io
import math
import re
from dataclasses import dataclass
from importlib import resources
from typing import Literal

from backends.specs import close_matches, cpu_tdp_w, gpu_power_w
from tracker.units import format_number

__all__ = [
    "PRECISIONS",
    "DeviceLoad",
    "Rating",
    "Throughput",
    "parse_count",
    "parse_device",
    "peak_throughput",
    "rating",
    "throughputs",
]

PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "fp8")


@dataclass(frozen=True, slots=True)
class Rating:
    """A device's rated power: table TDP / maximum board power, or watts given by the user."""

    name: str  # what the user wrote
    kind: Literal["gpu", "cpu", "power"]
    key: str  # accelerator key, CPU table name, or "" for given watts
    rated_w: float
    source: str


@dataclass(frozen=True, slots=True)
class DeviceLoad:
    """One line of a hardware list: ``count`` devices of one rating at average ``utilisation``."""

    rating: Rating
    count: int
    utilisation: float

    @property
    def power_w(self) -> float:
        """P_i x U_i summed over the devices of this line, in W."""
        return self.count * self.rating.rated_w * self.utilisation


@dataclass(frozen=True, slots=True)
class Throughput:
    """Peak dense throughput of one accelerator at one precision, and where it comes from."""

    key: str
    precision: str
    dense_tflops: float
    sparse_tflops: float | None
    source: str
    note: str


def rating(name: str | float) -> Rating:
    """The rated power of ``name``: watts (``300``, ``"300W"``, ``"0.3kW"``) or a model name.

    Accelerators are looked up first, then CPUs. An unknown name raises ``ValueError`` with the
    closest table names.
    """
    watts = _watts(name)
    if watts is not None:
        if not (watts > 0 and math.isfinite(watts)):
            raise ValueError(f"device power must be a positive number of watts, got {name!r}")
        return Rating(f"{format_number(watts)} W", "power", "", watts, "given")
    assert isinstance(name, str)
    gpu = gpu_power_w(name)
    if gpu is not None:
        spec = gpu[1]
        source = f"{spec.vendor} {spec.model} {spec.variant}, {spec.power_metric}: {spec.source}"
        return Rating(name, "gpu", spec.key, gpu[0], source)
    cpu = cpu_tdp_w(name)
    if cpu is not None:
        return Rating(name, "cpu", cpu[1], cpu[0], f"{cpu[1]} TDP per package (Intel/AMD spec)")
    near = close_matches("gpu", name, 4) + close_matches("cpu", name, 3)
    hint = f"; close matches: {', '.join(near)}" if near else ""
    raise ValueError(
        f"unknown device {name!r}{hint}. Give a model (H100, a100-pcie-80gb, "
        f"'AMD EPYC 7763') or watts (300W, 0.3kW)"
    )


def parse_device(spec: str) -> DeviceLoad:
    """``MODEL:COUNT[:UTIL]`` or ``WATTSW:COUNT[:UTIL]`` as a ``DeviceLoad``; UTIL defaults to 1."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0].strip():
        raise ValueError(
            f"device {spec!r} must be MODEL:COUNT[:UTIL] or WATTSW:COUNT[:UTIL], "
            "e.g. H100:8:0.9 or 300W:10:0.8"
        )
    count = parse_count(parts[1], f"count in {spec!r}")
    utilisation = 1.0
    if len(parts) == 3:
        utilisation = check_fraction(f"utilisation in {spec!r}", _float(parts[2], spec))
    return DeviceLoad(rating(parts[0].strip()), count, utilisation)


def parse_count(text: str | int, what: str = "count") -> int:
    """A device count: a whole number of at least 1."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError(f"{what} must be a whole number of devices >= 1, got {text!r}") from None
    if value < 1:
        raise ValueError(f"{what} must be a whole number of devices >= 1, got {value}")
    return value


def check_fraction(what: str, value: float) -> float:
    """A utilisation: a number from 0 to 1."""
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{what} must be between 0 and 1, got {value!r}")
    return float(value)


def peak_throughput(key: str, precision: str) -> Throughput:
    """Peak dense throughput of the accelerator with table ``key`` at ``precision``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    rows = [t for t in throughputs() if t.key == key]
    for row in rows:
        if row.precision == precision:
            return row
    if rows:
        have = ", ".join(r.precision for r in rows)
        raise ValueError(f"no {precision} throughput for {key}; the table has: {have}")
    known = sorted({t.key for t in throughputs()})
    raise ValueError(
        f"no peak throughput for {key or 'this device'} in the table; give --peak-tflops "
        f"(Python: peak_tflops=). Accelerators with figures: {', '.join(known)}"
    )


@functools.cache
def throughputs() -> tuple[Throughput, ...]:
    """Every row of the bundled throughput table, one per accelerator key and precision."""
    text = (resources.files("tracker") / "data" / "accelerator_throughput.csv").read_text(
        encoding="utf-8"
    )
    return tuple(
        Throughput(
            key=key,
            precision=row["precision"],
            dense_tflops=float(row["dense_tflops"]),
            sparse_tflops=float(row["sparse_tflops"]) if row["sparse_tflops"] else None,
            source=row["source"],
            note=row["note"],
        )
        for row in csv.DictReader(io.StringIO(text))
        for key in row["keys"].split("|")
    )


# --- helpers ----------------------------------------------------------------------------------


def _watts(name: str | float) -> float | None:
    if isinstance(name, int | float):
        return float(name)
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*(w|kw|mw)\s*", name, flags=re.IGNORECASE)
    value = None if match is None else _number(match.group(1))
    if match is None or value is None:
        return None
    return value * {"w": 1.0, "kw": 1e3, "mw": 1e6}[match.group(2).lower()]


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _float(text: str, spec: str) -> float:
    value = _number(text)
    if value is None:
        raise ValueError(f"utilisation in {spec!r} must be a number between 0 and 1, got {text!r}")
    return value
