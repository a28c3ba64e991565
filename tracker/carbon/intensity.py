"""Carbon intensity over time: a constant, a location's table value, or a time-series CSV.

Every source answers ``mean_g_per_kwh(start, end)``, the exact time-weighted mean (g CO2e per
kWh) over a span of unix seconds, and never touches the network on the caller's thread. Live
providers (``tracker.carbon.providers``) implement the same interface from their own fetch thread.
"""

from __future__ import annotations

import abc
import bisect
import csv
import math
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracker.carbon.locations import Location, resolve, world
from tracker.units import parse_utc, utc_label

MAX_SERIES_POINTS = 1000  # series_used() never returns more points than this
SERIES_SPAN_S = (0.0, 7_258_118_400.0)
"""Timestamps a series may hold, in unix seconds: 1970-01-01 up to 2200-01-01 (UTC). Anything
outside is a unit mistake (milliseconds, microseconds) rather than a grid intensity."""
_YEAR_2000_S = 946_684_800.0  # 2000-01-01 UTC: a number read as milliseconds lands after it
TIME_COLUMNS = ("timestamp", "time", "datetime", "date", "unix_s", "unix_time", "start", "from")
VALUE_COLUMNS = ("g_per_kwh", "intensity_g_per_kwh", "intensity", "carbon_intensity", "value")


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where an intensity came from; ``label`` is a location code, "constant", a file, a feed.

    ``year`` is the year the figure is for (None for live or user-given figures); ``basis`` says
    what it counts (lifecycle, operational).
    """

    label: str
    source: str
    year: int | None
    basis: str

    @property
    def labelled_source(self) -> str:
        """``label: source``, as the logs' ``intensity_source`` column holds it.

        Just ``source`` where ``label`` is empty: a provenance read back from the logs, whose
        column already holds both.
        """
        return f"{self.label}: {self.source}" if self.label else self.source


class IntensitySource(abc.ABC):
    """Grid carbon intensity over time, in g CO2e per kWh."""

    provenance: Provenance

    def __init__(self, provenance: Provenance) -> None:
        self.provenance = provenance
        self._lock = threading.Lock()
        self._pending: list[str] = []
        self._warned: set[str] = set()
        self._used: OrderedDict[float, float] = OrderedDict()

    @abc.abstractmethod
    def mean_g_per_kwh(self, start_unix_s: float, end_unix_s: float) -> float:
        """Exact time-weighted mean over [start, end]; start == end gives the value then."""

    def drain_warnings(self) -> list[str]:
        """Warnings raised since the last call, each cause once."""
        with self._lock:
            out, self._pending = self._pending, []
        return out

    def series_used(self) -> list[tuple[float, float]]:
        """The (unix_s, g_per_kwh) points that answered queries, oldest first, at most 1000."""
        with self._lock:
            return sorted(self._used.items())

    def close(self) -> None:  # noqa: B027 - most sources have nothing to stop
        """Stop any background work; the source still answers from what it has."""

    def _warn(self, cause: str, message: str) -> None:
        with self._lock:
            if cause not in self._warned:
                self._warned.add(cause)
                self._pending.append(message)

    def _record(self, points: list[tuple[float, float]]) -> None:
        with self._lock:
            for t, value in points:
                self._used[t] = value
                self._used.move_to_end(t)
            while len(self._used) > MAX_SERIES_POINTS:
                self._used.popitem(last=False)


IntensityArg = float | str | os.PathLike[str] | IntensitySource | None
"""What ``intensity=`` takes: a constant in g/kWh, text with a unit, a CSV path, or a source."""


class Constant(IntensitySource):
    """One intensity for all time (g CO2e/kWh); negative, NaN or infinite -> ValueError."""

    def __init__(self, g_per_kwh: float, provenance: Provenance | None = None) -> None:
        self.g_per_kwh = parse_intensity(g_per_kwh)
        default = Provenance("constant", "user-supplied constant", None, "as given by the user")
        super().__init__(provenance or default)

    def mean_g_per_kwh(self, start_unix_s: float, end_unix_s: float) -> float:
        """The constant, in g CO2e/kWh, over any valid span."""
        check_span(start_unix_s, end_unix_s)
        if not self._used:
            self._record([(float(start_unix_s), self.g_per_kwh)])
        return self.g_per_kwh


class StaticLocation(Constant):
    """A location's table value (``tracker.carbon.locations``) with its year, basis and source."""

    def __init__(self, location: Location) -> None:
        self.location = location
        provenance = Provenance(location.code, location.source, location.year, location.basis)
        super().__init__(location.g_per_kwh, provenance)


class TimeSeries(IntensitySource):
    """Intensity from a CSV of timestamp and g CO2e/kWh rows, constant from one row to the next.

    Timestamps are ISO-8601 with a timezone (``2025-03-01T12:00:00Z``) or unix seconds between
    1970 and 2200 and must increase strictly; the whole file is checked here, so a bad row fails
    at construction with its line. The header names one of ``TIME_COLUMNS`` and one of
    ``VALUE_COLUMNS`` (case-insensitive); other columns are ignored, as are empty lines and lines
    starting with ``#``. The first value also holds before its timestamp, the last after its own
    (for one more step of the series); a run reaching outside that gets one warning saying so.
    """

    def __init__(self, path: str | os.PathLike[str], provenance: Provenance | None = None) -> None:
        self.path = Path(path)
        self._steps = Steps(*_read_series(self.path))
        times = self._steps.times  # covered: first timestamp to the last plus one more step
        self._covers = (times[0], times[-1] + (times[-1] - times[-2] if len(times) > 1 else 0.0))
        self._asked: tuple[float, float] | None = None  # earliest start, latest end queried
        name = f"time series file {self.path.name}"
        super().__init__(provenance or Provenance(str(path), name, None, "as given in the file"))

    def mean_g_per_kwh(self, start_unix_s: float, end_unix_s: float) -> float:
        """The series' exact time-weighted mean over the span, in g CO2e/kWh."""
        mean, first, last = self._steps.mean(start_unix_s, end_unix_s)
        self._record(self._steps.points(first, last))
        with self._lock:
            asked = self._asked or (start_unix_s, end_unix_s)
            self._asked = (min(asked[0], start_unix_s), max(asked[1], end_unix_s))
        return mean

    def drain_warnings(self) -> list[str]:
        """As ``IntensitySource.drain_warnings``, plus one warning if the run left the series."""
        with self._lock:
            asked = self._asked
        (first, last), values = self._covers, self._steps.values
        if asked is not None and (asked[0] < first or asked[1] > last):
            held = [f"its first value ({values[0]:g} g/kWh) before it"] if asked[0] < first else []
            held += [f"its last value ({values[-1]:g} g/kWh) after it"] if asked[1] > last else []
            self._warn(
                "coverage",
                f"intensity series {self.path} covers {utc_label(first)} to {utc_label(last)}, "
                f"but the run spans {utc_label(asked[0])} to {utc_label(asked[1])}: it was "
                f"extended with {' and '.join(held)}; give a series that covers the run",
            )
        return super().drain_warnings()


def resolve_intensity(
    location: str | None,
    intensity: IntensityArg,
) -> tuple[IntensitySource, Location | None, list[str]]:
    """A run's intensity source: (source, the Location if any, warnings).

    ``intensity`` wins: a number, or text such as ``"500g/kWh"`` (``parse_intensity``) ->
    ``Constant``; a path to an existing file -> ``TimeSeries``, read and checked now; an
    ``IntensitySource`` -> as is. Else ``location``, else env ``WATTPRINT_LOCATION`` ->
    ``StaticLocation``; with neither, the world average and a warning. Anything else, or a
    ``location`` that is not a known place, raises ``ValueError`` naming the argument.
    """
    place = resolve(location) if location is not None else None
    if isinstance(intensity, IntensitySource):
        if place is None and isinstance(intensity, StaticLocation):
            place = intensity.location
        return intensity, place, []
    if isinstance(intensity, str | os.PathLike):
        text = os.fspath(intensity)
        if isinstance(text, str) and Path(text).is_file():
            return TimeSeries(text), place, []
        if isinstance(intensity, str):
            try:
                return Constant(parse_intensity(intensity)), place, []
            except ValueError:
                if _INTENSITY_TEXT.fullmatch(intensity):  # a number: its own error says what is off
                    raise
        raise ValueError(
            f"intensity {text!r} is neither a number of g CO2e per kWh nor an existing "
            f"time-series CSV file; accepted: {INTENSITY_FORMS}"
        )
    if intensity is not None:
        return Constant(intensity), place, []
    place = place or location_from_env()
    if place is not None:
        return StaticLocation(place), place, []
    place = world()
    warning = (
        f"no location set: using the world average {place.g_per_kwh:g} g CO2e/kWh "
        f"({place.source}, {place.year}); pass location= (e.g. 'DE', 'US-CA', 'aws:us-east-1') "
        "or set WATTPRINT_LOCATION for your grid's intensity"
    )
    return StaticLocation(place), place, [warning]


def location_from_env() -> Location | None:
    """The location env ``WATTPRINT_LOCATION`` names; None where it is unset or blank.

    An unknown location raises ``ValueError`` naming the variable.
    """
    text = os.environ.get("WATTPRINT_LOCATION", "").strip()
    if not text:
        return None
    try:
        return resolve(text)
    except ValueError as error:
        raise ValueError(f"WATTPRINT_LOCATION: {error}") from None


class Steps:
    """A step function: values[i] holds on [times[i], times[i+1]), extended flat at both ends."""

    def __init__(self, times: list[float], values: list[float]) -> None:
        self.times, self.values = times, values

    def mean(self, start: float, end: float) -> tuple[float, int, int]:
        """(exact mean over [start, end], first index used, last index used)."""
        check_span(start, end)
        first = max(bisect.bisect_right(self.times, start) - 1, 0)
        if start == end:
            return self.values[first], first, first
        last = max(bisect.bisect_left(self.times, end) - 1, first)
        total, cursor = 0.0, start
        for i in range(first, last + 1):
            stop = end if i == last else self.times[i + 1]
            total += self.values[i] * (stop - cursor)
            cursor = stop
        return total / (end - start), first, last

    def points(self, first: int, last: int) -> list[tuple[float, float]]:
        """The (time, value) steps from index ``first`` to ``last``, both included."""
        return list(zip(self.times[first : last + 1], self.values[first : last + 1], strict=True))


def check_span(start: float, end: float) -> None:
    """Check a span of unix seconds: both ends finite, ``end`` not before ``start`` (ValueError)."""
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"start and end must be finite unix seconds, got {start!r}, {end!r}")
    if end < start:
        raise ValueError(f"end ({end}) is before start ({start})")


def parse_intensity(value: str | float) -> float:
    """Grid intensity in g CO2e/kWh: a number (g/kWh) or text with a unit per kWh.

    ``500``, ``"500"``, ``"500g/kWh"``, ``"0.5kg/kWh"``, ``"0.5 kgCO2e/kWh"`` all give 500.0. A mass
    without ``/kWh`` (``"5kg"``) is refused as ambiguous, as are negative, NaN and infinite values.
    """
    if isinstance(value, str):
        match = _INTENSITY_TEXT.fullmatch(value)
        if match is None:
            raise ValueError(f"intensity must be g CO2e per kWh ({INTENSITY_UNITS}), got {value!r}")
        if match["unit"] and not match["per_kwh"]:
            raise ValueError(
                f"intensity {value!r} gives a mass but not per what: add the energy, e.g. "
                f"'{match['number']}{match['unit']}/kWh' ({INTENSITY_UNITS})"
            )
        try:
            number = float(match["number"]) * _GRAMS[(match["unit"] or "g").lower()]
        except ValueError:
            raise ValueError(
                f"intensity must be g CO2e per kWh ({INTENSITY_UNITS}), got {value!r}"
            ) from None
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"intensity must be {INTENSITY_FORMS}, got {value!r}")
    else:
        number = float(value)
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"intensity must be a finite number >= 0 g CO2e per kWh, got {value!r}")
    return number


INTENSITY_UNITS = "a bare number means g/kWh: 500, 500g/kWh, 0.5kg/kWh"
INTENSITY_FORMS = (
    "a number of g CO2e per kWh (500), text with a unit per kWh ('500g/kWh', '0.5kg/kWh'), "
    "a path to a time-series CSV file, or an IntensitySource (e.g. tracker.carbon.providers)"
)
_INTENSITY_TEXT = re.compile(
    r"\s*(?P<number>[0-9.eE+-]+)\s*"
    r"(?:(?P<unit>g|kg|t)\s*(?:co2e?)?\s*(?P<per_kwh>/\s*kwh)?)?\s*",
    flags=re.IGNORECASE,
)
_GRAMS = {"g": 1.0, "kg": 1e3, "t": 1e6}


def _rows_of(reader: Iterator[list[str]], path: Path) -> Iterator[list[str]]:
    """The CSV's rows, or a ``ValueError`` naming the file where the csv module cannot parse it.

    A field over the csv module's size limit, or a stray quote, is such a file.
    """
    try:
        yield from reader
    except csv.Error as error:
        raise ValueError(f"{path}: not a readable CSV ({error})") from None


def _read_series(path: Path) -> tuple[list[float], list[float]]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read the time series ({error})") from None
    times: list[float] = []
    values: list[float] = []
    columns: tuple[int, int] | None = None
    reader = csv.reader(lines)
    for row in _rows_of(reader, path):
        where = f"{path}: line {reader.line_num}"
        if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if columns is None:
            columns = _header_columns(where, row)
            continue
        if len(row) <= max(columns):
            raise ValueError(f"{where}: expected {max(columns) + 1} columns, got {len(row)}")
        try:
            t = series_time(row[columns[0]])
            value = intensity_value(row[columns[1]])
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        if times and t <= times[-1]:
            raise ValueError(
                f"{where}: timestamp {row[columns[0]].strip()!r} is not after the last"
            )
        times.append(t)
        values.append(value)
    if not times:
        raise ValueError(f"{path}: no data rows (expected a header, then timestamp,g_per_kwh rows)")
    return times, values


def _header_columns(where: str, row: list[str]) -> tuple[int, int]:
    names = [cell.strip().lower().replace(" ", "_") for cell in row]
    t_col = next((i for i, n in enumerate(names) if n in TIME_COLUMNS), None)
    v_col = next((i for i, n in enumerate(names) if n in VALUE_COLUMNS), None)
    if t_col is None or v_col is None:
        raise ValueError(
            f"{where}: header {row!r} needs a time column (one of {', '.join(TIME_COLUMNS)}) "
            f"and a value column (one of {', '.join(VALUE_COLUMNS)})"
        )
    return t_col, v_col


def series_time(text: str) -> float:
    """A series timestamp in unix seconds (``parse_utc``), within ``SERIES_SPAN_S``.

    A number that reads as a date since 2000 in unix milli-, micro- or nanoseconds is named so,
    with the divisor that makes it seconds.
    """
    value = parse_utc(text)
    earliest, latest = SERIES_SPAN_S
    if earliest <= value < latest:
        return value
    if re.fullmatch(r"\s*[0-9.eE+]+\s*", text):
        for unit, per_second in (("milli", 1e3), ("micro", 1e6), ("nano", 1e9)):
            if _YEAR_2000_S <= value / per_second < latest:
                raise ValueError(
                    f"timestamp {text.strip()!r} looks like unix {unit}seconds "
                    f"({utc_label(value / per_second)}); the column must be unix seconds: divide "
                    f"it by {per_second:,.0f}, or write ISO-8601 (2026-01-01T12:00:00Z)"
                )
    raise ValueError(
        f"timestamp {text.strip()!r} is not between 1970 and 2200 (unix seconds "
        f"{earliest:.0f} to {latest:.0f})"
    )


def intensity_value(raw: Any) -> float:
    """A series cell or provider value: a bare number of g CO2e/kWh (``parse_intensity``)."""
    try:
        return parse_intensity(raw if isinstance(raw, int | float) else float(str(raw).strip()))
    except ValueError:
        raise ValueError(f"intensity {raw!r} is not a finite number >= 0 g/kWh") from None
