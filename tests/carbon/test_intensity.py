"""Intensity sources: exact means, CSV errors, run resolution, and live feeds on a local server."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.fake_grid_api import FakeGridApi
from tests.faults.simulated import ConstantPowerMeter
from tracker import Tracker
from tracker.carbon.intensity import (
    MAX_SERIES_POINTS,
    Constant,
    IntensitySource,
    Provenance,
    StaticLocation,
    TimeSeries,
    parse_intensity,
    resolve_intensity,
)
from tracker.carbon.locations import resolve
from tracker.carbon.providers import ElectricityMaps, GBCarbonIntensity

TOKEN = "em-secret-token-0123456789"
T0 = 1_740_830_400.0  # 2025-03-01T12:00:00Z, the time the fake API reports


def _csv(tmp_path: Path, text: str, name: str = "grid.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def _until(predicate: Callable[[], bool], timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# ----------------------------------------------------------------------------------------------
# TimeSeries: exact step means


@pytest.fixture
def step_series(tmp_path: Path) -> TimeSeries:
    return TimeSeries(_csv(tmp_path, "timestamp,g_per_kwh\n0,100\n50,200\n"))


@pytest.mark.parametrize(
    ("start", "end", "mean"),
    [(0.0, 100.0, 150.0), (25.0, 75.0, 150.0), (50.0, 100.0, 200.0), (0.0, 50.0, 100.0)],
)
def test_time_series_mean_is_exactly_time_weighted(
    step_series: TimeSeries, start: float, end: float, mean: float
) -> None:
    assert step_series.mean_g_per_kwh(start, end) == mean


def test_time_series_instant_gives_the_value_in_effect_then(step_series: TimeSeries) -> None:
    assert step_series.mean_g_per_kwh(49.999, 49.999) == 100.0
    assert step_series.mean_g_per_kwh(50.0, 50.0) == 200.0


def test_time_series_holds_first_value_before_and_last_value_after(step_series: TimeSeries) -> None:
    assert step_series.mean_g_per_kwh(-100.0, -10.0) == 100.0
    assert step_series.mean_g_per_kwh(-50.0, 50.0) == 100.0
    assert step_series.mean_g_per_kwh(1e6, 2e6) == 200.0
    assert step_series.mean_g_per_kwh(-50.0, 150.0) == (100.0 * 100 + 200.0 * 100) / 200


def test_time_series_reversed_span_is_an_error(step_series: TimeSeries) -> None:
    with pytest.raises(ValueError, match="before start"):
        step_series.mean_g_per_kwh(10.0, 5.0)


def test_time_series_accepts_iso_timestamps_with_any_offset_and_flexible_headers(
    tmp_path: Path,
) -> None:
    text = (
        "# hourly grid intensity\n"
        "Zone, Time ,Intensity\n"
        "\n"
        "DE,2025-03-01T12:00:00Z,300\n"
        "DE,2025-03-01T14:00:00+01:00,100\n"
    )
    series = TimeSeries(_csv(tmp_path, text))
    # the second row is 13:00 UTC: one hour at 300, one hour at 100
    assert series.mean_g_per_kwh(T0, T0 + 7200) == 200.0
    assert series.provenance.label.endswith("grid.csv")
    assert series.provenance.year is None


def test_series_used_lists_only_the_points_that_answered(tmp_path: Path) -> None:
    series = TimeSeries(_csv(tmp_path, "unix_s,g_per_kwh\n0,1\n10,2\n20,3\n30,4\n"))
    series.mean_g_per_kwh(12.0, 25.0)
    assert series.series_used() == [(10.0, 2.0), (20.0, 3.0)]


def test_series_used_is_bounded(tmp_path: Path) -> None:
    rows = "".join(f"{i},{i % 500}\n" for i in range(3 * MAX_SERIES_POINTS))
    series = TimeSeries(_csv(tmp_path, "timestamp,g_per_kwh\n" + rows))
    series.mean_g_per_kwh(0.0, 3.0 * MAX_SERIES_POINTS)
    used = series.series_used()
    assert len(used) == MAX_SERIES_POINTS
    assert used[-1] == (2999.0, 2999.0 % 500)


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ("timestamp,g_per_kwh\n2025-03-01T12:00:00,10\n", 2, "no timezone"),
        ("timestamp,g_per_kwh\n0,10\n0,20\n", 3, "not after"),
        ("timestamp,g_per_kwh\n0,10\n5,-1\n", 3, "finite number >= 0"),
        ("timestamp,g_per_kwh\n0,lots\n", 2, "finite number >= 0"),
        ("timestamp,g_per_kwh\nyesterday,10\n", 2, "neither ISO-8601 nor unix seconds"),
        ("timestamp,g_per_kwh\n0\n", 2, "expected 2 columns"),
        ("when,how_much\n0,10\n", 1, "needs a time column"),
    ],
)
def test_bad_time_series_file_names_the_file_line_and_problem(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = _csv(tmp_path, text)
    with pytest.raises(ValueError, match=problem) as info:
        TimeSeries(path)
    assert str(info.value).startswith(f"{path}: line {line}: ")


@pytest.mark.parametrize(
    ("stamps", "unit", "divisor"),
    [
        ((1_740_830_400_000, 1_740_834_000_000), "milliseconds", "1,000"),
        ((1_740_830_400_000_000, 1_740_834_000_000_000), "microseconds", "1,000,000"),
    ],
)
def test_a_series_in_unix_milli_or_microseconds_fails_when_loaded_saying_so(
    tmp_path: Path, stamps: tuple[int, int], unit: str, divisor: str
) -> None:
    rows = "".join(f"{t},300\n" for t in stamps)
    path = _csv(tmp_path, "# hourly\nunix_time,g_per_kwh\n" + rows)
    with pytest.raises(ValueError) as info:
        Tracker("p", tmp_path / "runs", intensity=path, verbose=0)  # fails here, not in start()
    message = str(info.value)
    assert message.startswith(f"{path}: line 3: timestamp '{stamps[0]}' looks like unix {unit}")
    assert f"divide it by {divisor}" in message and "2025-03-01T12:00:00.000Z" in message
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("stamp", ["-3600", "1899-12-31T00:00:00Z", "2200-01-01T00:00:00Z"])
def test_a_series_timestamp_outside_1970_to_2200_names_its_line(tmp_path: Path, stamp: str) -> None:
    path = _csv(tmp_path, f"timestamp,g_per_kwh\n0,10\n{stamp},20\n")
    with pytest.raises(ValueError, match=f"line 3: timestamp '{stamp}' is not between 1970 and"):
        TimeSeries(path)


def test_empty_or_missing_time_series_file_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no data rows"):
        TimeSeries(_csv(tmp_path, "timestamp,g_per_kwh\n"))
    with pytest.raises(ValueError, match="cannot read"):
        TimeSeries(tmp_path / "absent.csv")


def test_a_run_inside_the_series_gets_no_coverage_warning(step_series: TimeSeries) -> None:
    step_series.mean_g_per_kwh(0.0, 100.0)  # 0 to 50 at 100, then one more step of 50 s at 200
    assert step_series.drain_warnings() == []


def test_a_run_after_the_series_ends_is_priced_at_its_last_value_with_one_warning(
    step_series: TimeSeries,
) -> None:
    assert step_series.mean_g_per_kwh(1000.0, 2000.0) == 200.0
    step_series.mean_g_per_kwh(2000.0, 3000.0)
    [warning] = step_series.drain_warnings()
    assert "covers 1970-01-01T00:00:00.000Z to 1970-01-01T00:01:40.000Z" in warning
    assert "the run spans 1970-01-01T00:16:40.000Z to 1970-01-01T00:50:00.000Z" in warning
    assert "its last value (200 g/kWh) after it" in warning and "first value" not in warning
    step_series.mean_g_per_kwh(4000.0, 5000.0)
    assert step_series.drain_warnings() == []  # once


def test_a_series_that_starts_after_the_run_says_its_first_value_stood_in(
    step_series: TimeSeries,
) -> None:
    assert step_series.mean_g_per_kwh(-100.0, -10.0) == 100.0
    [warning] = step_series.drain_warnings()
    assert "its first value (100 g/kWh) before it" in warning and "last value" not in warning


def test_a_tracker_run_months_after_its_series_ended_warns_in_the_summary_and_run_json(
    tmp_path: Path,
) -> None:
    path = _csv(
        tmp_path,
        "timestamp,g_per_kwh\n2025-01-01T00:00:00Z,300\n2025-01-01T01:00:00Z,200\n",
    )
    tracker = Tracker(
        "p", tmp_path / "runs", intensity=path, meters=[ConstantPowerMeter()],
        components=["gpu"], verbose=0, interval=0.05,
    )  # fmt: skip
    with tracker, tracker.epoch():
        time.sleep(0.05)
    [warning] = [w for w in tracker.summary.warnings if "covers" in w]
    assert warning in json.loads((tracker.run_dir / "run.json").read_text())["warnings"]
    assert f"intensity series {path} covers 2025-01-01T00:00:00.000Z to 2025-01-01T02:00" in warning
    assert "its last value (200 g/kWh) after it" in warning
    assert tracker.epochs[0].intensity_g_per_kwh == pytest.approx(200.0)  # still used, as said


# ----------------------------------------------------------------------------------------------
# Constant and StaticLocation


@pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf, True])
def test_constant_rejects_negative_nan_infinite_and_bool_naming_intensity(bad: float) -> None:
    with pytest.raises(ValueError, match=r"^intensity must be"):
        Constant(bad)


def test_constant_answers_its_value_for_any_span_and_records_one_point() -> None:
    source = Constant(250)
    assert source.mean_g_per_kwh(10.0, 20.0) == 250.0
    assert source.mean_g_per_kwh(5.0, 5.0) == 250.0
    assert source.series_used() == [(10.0, 250.0)]
    assert source.provenance == Provenance(
        "constant", "user-supplied constant", None, "as given by the user"
    )
    assert source.drain_warnings() == []


def test_static_location_carries_the_locations_provenance() -> None:
    source = StaticLocation(resolve("FR"))
    assert source.mean_g_per_kwh(0.0, 3600.0) == 44.18
    assert source.provenance.label == "FR"
    assert source.provenance.year == 2024
    assert "lifecycle" in source.provenance.basis
    assert "Ember" in source.provenance.source


# ----------------------------------------------------------------------------------------------
# resolve_intensity


@pytest.fixture
def no_env_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WATTPRINT_LOCATION", raising=False)


def test_number_gives_a_constant_and_the_location_still_gives_its_pue(
    no_env_location: None,
) -> None:
    source, place, warnings = resolve_intensity("aws:eu-west-1", 120)
    assert isinstance(source, Constant) and source.mean_g_per_kwh(0, 1) == 120.0
    assert place is not None and place.default_pue == 1.2
    assert warnings == []


def test_numeric_string_gives_a_constant(no_env_location: None) -> None:
    source, place, _ = resolve_intensity(None, "350.5")
    assert isinstance(source, Constant) and source.g_per_kwh == 350.5
    assert place is None


def test_csv_path_as_str_or_path_gives_a_time_series(tmp_path: Path, no_env_location: None) -> None:
    path = _csv(tmp_path, "timestamp,g_per_kwh\n0,100\n50,200\n")
    for given in (path, str(path)):
        source, _, warnings = resolve_intensity(None, given)
        assert isinstance(source, TimeSeries)
        assert source.mean_g_per_kwh(0, 100) == 150.0
        assert warnings == []


def test_text_that_is_neither_a_number_nor_a_file_is_an_error(no_env_location: None) -> None:
    with pytest.raises(ValueError, match=r"neither a number .* nor an existing time-series CSV"):
        resolve_intensity(None, "grid-2025.csv")


@pytest.mark.parametrize(
    ("text", "g_per_kwh"),
    [("500", 500.0), ("500g/kWh", 500.0), ("0.5kg/kWh", 500.0), ("0.5 kg CO2e / kWh", 500.0)],
)
def test_intensity_text_takes_a_unit_per_kwh(
    text: str, g_per_kwh: float, no_env_location: None
) -> None:
    source, _, _ = resolve_intensity(None, text)
    assert isinstance(source, Constant) and source.g_per_kwh == g_per_kwh


@pytest.mark.parametrize("text", ["5kg", "500 g", "0.5t", "5 kgCO2e"])
def test_a_mass_without_per_kwh_is_refused_as_ambiguous(text: str, no_env_location: None) -> None:
    with pytest.raises(ValueError, match=r"gives a mass but not per what.*/kWh"):
        resolve_intensity(None, text)
    with pytest.raises(ValueError, match="gives a mass but not per what"):
        parse_intensity(text)


@pytest.mark.parametrize("bad", [[1, 2], b"500", {"g": 1}, True, object()])
def test_an_intensity_of_another_type_is_a_value_error_listing_what_is_accepted(
    bad: object, no_env_location: None
) -> None:
    with pytest.raises(ValueError, match=r"intensity must be a number .*time-series CSV"):
        resolve_intensity(None, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [5, 2.5, ["DE"], b"DE", ("DE",)])
def test_a_location_that_is_not_text_is_a_value_error_naming_location(
    bad: object, no_env_location: None
) -> None:
    with pytest.raises(ValueError, match=r"^location must be a str, got .*ISO2/ISO3"):
        resolve_intensity(bad, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^location must be a str"):
        Tracker(location=bad)  # type: ignore[arg-type]


def test_a_given_source_is_used_as_is() -> None:
    given = Constant(10)
    source, place, _ = resolve_intensity("IN-KA", given)
    assert source is given
    assert place is not None and place.code == "IN-KA"


def test_location_alone_gives_its_static_value(no_env_location: None) -> None:
    source, place, warnings = resolve_intensity("gcp:europe-west4", None)
    assert isinstance(source, StaticLocation)
    assert source.mean_g_per_kwh(0, 1) == 208.81
    assert place is not None and place.default_pue == 1.12
    assert warnings == []


def test_env_location_is_used_when_no_location_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTPRINT_LOCATION", "se")
    source, place, warnings = resolve_intensity(None, None)
    assert place is not None and place.code == "SE"
    assert source.provenance.label == "SE" and warnings == []


def test_bad_env_location_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATTPRINT_LOCATION", "Swedn")
    with pytest.raises(ValueError, match=r"^WATTPRINT_LOCATION: .*Sweden \(SE\)"):
        resolve_intensity(None, None)


def test_nothing_set_falls_back_to_the_world_average_with_advice(no_env_location: None) -> None:
    source, place, warnings = resolve_intensity(None, None)
    assert place is not None and place.code == "WORLD"
    assert source.mean_g_per_kwh(0, 1) == 472.99
    [warning] = warnings
    assert "world average" in warning
    assert "location=" in warning and "WATTPRINT_LOCATION" in warning


# ----------------------------------------------------------------------------------------------
# Live providers against a local server


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGridApi]:
    for name in (
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ELECTRICITYMAPS_TOKEN", TOKEN)
    with FakeGridApi(token=TOKEN) as server:
        yield server


def _em(api: FakeGridApi, refresh_s: float = 900.0, timeout_s: float = 5.0) -> ElectricityMaps:
    url = api.base_url + "/v3"
    return ElectricityMaps("DE", base_url=url, refresh_s=refresh_s, timeout_s=timeout_s)


def _assert_no_token(source: IntensitySource, warnings: list[str]) -> None:
    exposed = [repr(source.provenance), repr(source.series_used()), *warnings]
    assert not any(TOKEN in text for text in exposed)


def test_electricity_maps_serves_the_latest_value_and_sends_the_token_only_as_a_header(
    api: FakeGridApi,
) -> None:
    source = _em(api)
    try:
        assert source.wait_ready(3.0)
        assert source.mean_g_per_kwh(T0 + 60, T0 + 120) == 322.0
        path, headers = api.requests[0]
        assert path.startswith("/v3/carbon-intensity/latest?zone=DE")
        assert TOKEN not in path and headers["auth-token"] == TOKEN
        assert source.series_used() == [(T0, 322.0)]
        assert source.provenance.label == "electricitymaps:DE"
        assert "lifecycle" in source.provenance.basis
        warnings = source.drain_warnings()
        assert warnings == []
        _assert_no_token(source, warnings)
    finally:
        source.close()


def test_electricity_maps_without_a_token_falls_back_without_any_request(
    api: FakeGridApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ELECTRICITYMAPS_TOKEN")
    source = _em(api)
    assert source.mean_g_per_kwh(T0, T0 + 60) == resolve("DE").g_per_kwh
    [warning] = source.drain_warnings()
    assert "ELECTRICITYMAPS_TOKEN is not set" in warning and "DE 344.14" in warning
    time.sleep(0.05)
    assert api.requests == []
    source.close()


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("error", "HTTP 500"), ("garbage", "not valid JSON"), ("shape", "unexpected response")],
)
def test_electricity_maps_failure_falls_back_to_the_zone_country_with_one_warning(
    api: FakeGridApi, mode: str, reason: str
) -> None:
    api.mode = mode
    source = _em(api, refresh_s=0.05)
    try:
        assert source.wait_ready(3.0)
        assert source.mean_g_per_kwh(T0, T0 + 60) == 344.14
        warnings = source.drain_warnings()
        assert len(warnings) == 1
        assert reason in warnings[0] and "using DE 344.14 g/kWh" in warnings[0]
        assert _until(lambda: len(api.requests) >= 3)  # it retries...
        assert source.drain_warnings() == []  # ...but warns once per cause
        _assert_no_token(source, warnings)
    finally:
        source.close()


def test_slow_provider_never_blocks_the_constructor_or_the_caller(api: FakeGridApi) -> None:
    api.mode = "slow"
    began = time.perf_counter()
    source = _em(api, timeout_s=0.3)
    constructed_s = time.perf_counter() - began
    try:
        began = time.perf_counter()
        value = source.mean_g_per_kwh(T0, T0 + 60)
        answered_s = time.perf_counter() - began
        assert constructed_s < 0.1 and answered_s < 0.05
        assert value == 344.14
        for second in range(1, 50):
            assert source.mean_g_per_kwh(T0 + second, T0 + second + 1) == 344.14
        assert source.series_used() == [(T0, 344.14)]
        [pending] = source.drain_warnings()
        assert "no data yet" in pending
        assert source.wait_ready(3.0)  # the fetch times out after 0.3 s, on its own thread
        [failed] = source.drain_warnings()
        assert "request failed" in failed and "timed out" in failed
        _assert_no_token(source, [pending, failed])
    finally:
        began = time.perf_counter()
        source.close()
        assert time.perf_counter() - began < 0.3


def test_provider_recovers_after_a_failure_and_warns_again_on_a_new_one(api: FakeGridApi) -> None:
    api.mode = "error"
    source = _em(api, refresh_s=0.05)
    try:
        assert source.wait_ready(3.0)
        assert len(source.drain_warnings()) == 1
        api.mode = "normal"
        assert _until(lambda: source.mean_g_per_kwh(T0, T0) == 322.0)
        api.mode = "error"
        assert _until(lambda: bool(source.drain_warnings()))
        assert source.mean_g_per_kwh(T0, T0 + 60) == 322.0  # holds the last value received
    finally:
        source.close()


def test_provider_means_are_exact_over_the_points_it_received(api: FakeGridApi) -> None:
    source = _em(api, refresh_s=0.05)
    try:
        assert _until(lambda: source.mean_g_per_kwh(T0, T0) == 322.0)
        api.em_intensity, api.em_datetime = 122.0, "2025-03-01T13:00:00.000Z"
        assert _until(lambda: source.mean_g_per_kwh(T0 + 3600, T0 + 3600) == 122.0)
        assert source.mean_g_per_kwh(T0 + 1800, T0 + 5400) == 222.0
    finally:
        source.close()


def test_electricity_maps_fallback_follows_the_zone_country_or_a_given_location(
    api: FakeGridApi,
) -> None:
    us = ElectricityMaps("US-CAL-CISO", base_url=api.base_url + "/v3")
    given = ElectricityMaps("DK-DK1", fallback="DK", base_url=api.base_url + "/v3")
    us.close()
    given.close()
    assert us.fallback.code == "US"
    assert given.fallback.code == "DK"


def test_gb_national_uses_the_actual_value_where_published(api: FakeGridApi) -> None:
    source = GBCarbonIntensity(base_url=api.base_url)
    try:
        assert source.wait_ready(3.0)
        assert source.mean_g_per_kwh(T0, T0 + 1800) == 175.0
        assert api.requests[0][0] == "/intensity"
        assert source.provenance.label == "gb-carbon-intensity"
        assert "operational" in source.provenance.basis
        assert source.fallback.code == "GB"
    finally:
        source.close()


def test_gb_national_uses_the_forecast_while_no_actual_is_published(api: FakeGridApi) -> None:
    api.gb_actual = None
    source = GBCarbonIntensity(base_url=api.base_url)
    try:
        assert source.wait_ready(3.0)
        assert source.mean_g_per_kwh(T0, T0) == 180.0
    finally:
        source.close()


def test_gb_postcode_and_region_read_the_regional_forecast(api: FakeGridApi) -> None:
    by_postcode = GBCarbonIntensity(postcode="rg10 9xx", base_url=api.base_url)
    by_region = GBCarbonIntensity(region_id=12, base_url=api.base_url)
    try:
        assert by_postcode.wait_ready(3.0) and by_region.wait_ready(3.0)
        assert by_postcode.mean_g_per_kwh(T0, T0) == by_region.mean_g_per_kwh(T0, T0) == 143.0
        paths = sorted(path for path, _ in api.requests)
        assert paths == ["/regional/postcode/RG10", "/regional/regionid/12"]
        assert by_postcode.provenance.label == "gb-carbon-intensity:RG10"
    finally:
        by_postcode.close()
        by_region.close()


@pytest.mark.parametrize(
    "kwargs",
    [{"postcode": "RG10", "region_id": 3}, {"region_id": 0}, {"region_id": 18}, {"postcode": "!!"}],
)
def test_gb_rejects_bad_arguments_before_any_request(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"postcode|region_id"):
        GBCarbonIntensity(base_url="http://127.0.0.1:9", **kwargs)  # type: ignore[arg-type]


def test_provider_rejects_non_positive_timeouts() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        GBCarbonIntensity(timeout_s=0, base_url="http://127.0.0.1:9")
