"""Timestamps read back the same on every supported Python: ``tracker.output.logs.parse_utc``.

Python 3.10's ``datetime.fromisoformat`` refuses ISO-8601 forms that 3.11 accepts (``Z``, a
fraction that is not 3 or 6 digits, ``+0000``, the basic format); wattprint parses them itself.
Run this file under both interpreters.
"""

from __future__ import annotations

import calendar
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tracker.carbon.intensity import TimeSeries
from tracker.units import parse_utc, utc_label

NOON = float(calendar.timegm((2026, 1, 1, 12, 0, 0)))  # 2026-01-01T12:00:00Z


@pytest.mark.parametrize(
    ("text", "unix_s"),
    [
        ("2026-01-01T12:00:00Z", NOON),
        ("2026-01-01T12:00:00.5Z", NOON + 0.5),
        ("2026-01-01T12:00:00.123456789Z", NOON + 0.123456789),
        ("2026-01-01T12:00:00,25z", NOON + 0.25),
        ("2026-01-01T12:00:00+0000", NOON),
        ("2026-01-01T12:00:00+00:00", NOON),
        ("2026-01-01T13:30:00+01:30", NOON),
        ("2026-01-01T10:00:00-0200", NOON),
        ("2026-01-01T13:00+01", NOON),
        ("2026-01-01 12:00Z", NOON),
        ("20260101T120000Z", NOON),
        ("20260101T120000.5+0000", NOON + 0.5),
        ("2026-01-01T12Z", NOON),
        (" 2026-01-01T12:00:00.000Z ", NOON),
        (str(int(NOON)), NOON),
        ("1767268800.25", NOON + 0.25),
    ],
)
def test_iso_8601_with_a_timezone_and_unix_seconds_give_unix_seconds(
    text: str, unix_s: float
) -> None:
    assert parse_utc(text) == pytest.approx(unix_s, abs=1e-6)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("2026-01-01T12:00:00", "has no timezone"),
        ("2026-01-01", "has no timezone"),
        ("yesterday", "neither ISO-8601 nor unix seconds"),
        ("", "neither ISO-8601 nor unix seconds"),
        ("2026-13-01T12:00:00Z", "not a valid date and time"),
        ("2026-02-30T12:00:00Z", "not a valid date and time"),
        ("2026-01-01T25:00:00Z", "not a valid date and time"),
        ("2026-01-01T12:00:00+25:00", "not a valid date and time"),
        ("2026-01-01T12:00:00+01:75", "not a valid date and time"),
        ("nan", "not a finite number"),
        ("inf", "not a finite number"),
    ],
)
def test_anything_else_is_a_value_error_naming_the_text_and_what_is_accepted(
    text: str, problem: str
) -> None:
    with pytest.raises(ValueError, match=problem) as info:
        parse_utc(text)
    assert repr(text.strip()) in str(info.value)


def test_the_error_for_unreadable_text_lists_the_accepted_forms() -> None:
    with pytest.raises(ValueError, match=r"2026-01-01T12:00:00Z.*20260101T120000Z"):
        parse_utc("01/01/2026 12:00")


@given(st.floats(min_value=0, max_value=7e9, allow_nan=False).map(lambda t: round(t, 3)))
def test_parse_utc_reads_back_what_utc_label_writes(unix_s: float) -> None:
    assert parse_utc(utc_label(unix_s)) == pytest.approx(unix_s, abs=5e-4)


def test_an_intensity_series_in_any_of_these_forms_loads(tmp_path: Path) -> None:
    path = tmp_path / "grid.csv"
    path.write_text(
        "timestamp,g_per_kwh\n"
        "2026-01-01T12:00:00Z,100\n"
        "2026-01-01T12:30:00.5Z,200\n"
        "2026-01-01T14:00:00+0100,300\n"  # 13:00 UTC
        "20260101T140000Z,400\n"
    )
    series = TimeSeries(path)
    assert series.mean_g_per_kwh(NOON, NOON) == 100.0
    assert series.mean_g_per_kwh(NOON + 1800.5, NOON + 1800.5) == 200.0
    assert series.mean_g_per_kwh(NOON + 3600, NOON + 3600) == 300.0
    assert series.mean_g_per_kwh(NOON + 7200, NOON + 7200) == 400.0
