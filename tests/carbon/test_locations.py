"""Location lookup and the integrity of the bundled intensity tables."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from tracker.carbon import locations
from tracker.carbon.locations import Location, format_locations, resolve, search, world

DATA = Path(locations.__file__).parents[1] / "data"
TABLE_ROWS = {
    "grid_countries.csv": 222,
    "grid_us_states.csv": 53,
    "grid_india_states.csv": 37,
    "cloud_regions.csv": 121,
    "cloud_region_intensity.csv": 59,
    "pue_defaults.csv": 6,
}


def _table(name: str) -> list[dict[str, str]]:
    with open(DATA / name, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _sources() -> dict[str, dict[str, str]]:
    sources: dict[str, dict[str, str]] = json.loads((DATA / "sources.json").read_text("utf-8"))[
        "sources"
    ]
    return sources


# ----------------------------------------------------------------------------------------------
# Bundled data integrity


def test_bundled_tables_have_the_expected_row_counts_and_sources_json_agrees() -> None:
    tables = json.loads((DATA / "sources.json").read_text("utf-8"))["tables"]
    assert set(tables) == set(TABLE_ROWS)
    for name, rows in TABLE_ROWS.items():
        assert len(_table(name)) == rows, name
        assert tables[name]["rows"] == rows, name


def test_every_value_row_has_a_year_a_plausible_value_and_a_known_source_with_basis() -> None:
    sources = _sources()
    value_tables = [n for n in TABLE_ROWS if n != "cloud_regions.csv"]
    for name in value_tables:
        for row in _table(name):
            value = float(row["pue"] if name == "pue_defaults.csv" else row["g_per_kwh"])
            assert math.isfinite(value), (name, row)
            assert 2019 <= int(row["year"]) <= 2025, (name, row)
            meta = sources[row["source_id"]]
            for field in ("title", "publisher", "licence", "basis", "years", "label"):
                assert meta[field], (row["source_id"], field)
            if name == "pue_defaults.csv":
                assert 1.0 <= value <= 2.0
                assert row["reference"].startswith("https://")
            else:
                assert 0.0 <= value <= 1500.0, (name, row)


def test_codes_are_unique_within_and_across_tables() -> None:
    codes: list[str] = []
    for name in ("grid_countries.csv", "grid_us_states.csv", "grid_india_states.csv"):
        codes += [r["code"] for r in _table(name)]
    codes += [r["code"] for r in _table("cloud_regions.csv")]
    assert len(codes) == len(set(codes)) == 433
    iso3 = [r["iso3"] for r in _table("grid_countries.csv") if r["iso3"]]
    assert len(iso3) == len(set(iso3)) == 209
    pairs = [(r["code"], r["source_id"]) for r in _table("cloud_region_intensity.csv")]
    assert len(pairs) == len(set(pairs))


def test_known_values_match_the_published_tables() -> None:
    countries = {r["code"]: r for r in _table("grid_countries.csv")}
    assert (countries["DE"]["g_per_kwh"], countries["DE"]["year"]) == ("344.14", "2024")
    assert countries["US"]["g_per_kwh"] == "383.55"
    assert countries["IN"]["g_per_kwh"] == "708.32"
    assert countries["WORLD"]["g_per_kwh"] == "472.99"
    assert countries["NA"]["name"] == "Namibia"  # "NA" must not be read as missing
    assert countries["KR"]["iso3"] == "KOR"  # ISO2 filled in where the source had none
    us = {r["code"]: r for r in _table("grid_us_states.csv")}
    assert us["US-TOTAL"]["g_per_kwh"] == "345.61"
    assert us["US-CA"]["g_per_kwh"] == "199.67"
    india = {r["code"]: r for r in _table("grid_india_states.csv")}
    assert india["IN-TOTAL"]["g_per_kwh"] == "621.1"
    assert india["IN-KA"]["g_per_kwh"] == "394.41"
    pue = {r["provider"]: r["pue"] for r in _table("pue_defaults.csv")}
    assert pue == {
        "unknown": "1.56",
        "gcp": "1.12",
        "aws": "1.2",
        "azure": "1.12",
        "ovhcloud": "1.09",
        "oracle": "1.2",
    }
    google = {
        r["code"]: r["g_per_kwh"]
        for r in _table("cloud_region_intensity.csv")
        if r["source_id"] == "google-region-carbon"
    }
    assert len(google) == 44
    assert google["gcp:us-central1"] == "412.72"


def test_cloud_regions_map_to_known_countries_and_states_per_provider() -> None:
    grid = {
        r["code"]
        for n in ("grid_countries.csv", "grid_us_states.csv", "grid_india_states.csv")
        for r in _table(n)
    }
    regions = _table("cloud_regions.csv")
    per_provider = {p: sum(r["provider"] == p for r in regions) for p in ("aws", "azure", "gcp")}
    assert per_provider == {"aws": 36, "azure": 41, "gcp": 44}
    for r in regions:
        assert r["code"] == f"{r['provider']}:{r['region']}"
        assert r["country"] in grid
        assert not r["state"] or (r["state"] in grid and r["state"].startswith(r["country"] + "-"))


def test_state_basis_quotes_the_totals_that_are_in_the_tables() -> None:
    sources = _sources()
    assert "345.6" in sources["ember-us-states"]["basis"]
    assert "383.6" in sources["ember-us-states"]["basis"]
    assert "621.1" in sources["ember-india-states"]["basis"]
    assert "708.3" in sources["ember-india-states"]["basis"]
    assert "lifecycle" in sources["ember-country"]["basis"]
    assert "operational" in sources["google-region-carbon"]["basis"]


def test_licence_texts_required_by_the_sources_are_bundled() -> None:
    for meta in _sources().values():
        if meta["licence_file"]:
            assert (DATA / meta["licence_file"]).is_file(), meta["licence_file"]
    assert (
        (DATA / "LICENSE-CC-BY-4.0.txt")
        .read_text("utf-8")
        .startswith("Attribution 4.0 International")
    )
    assert "Apache License" in (DATA / "LICENSE-Apache-2.0.txt").read_text("utf-8")
    assert (DATA / "SOURCES.md").is_file()


def test_bundled_files_name_no_path_outside_the_repository() -> None:
    outside = "/".join(["", "work", "shared"])
    for path in [*DATA.iterdir(), Path(locations.__file__)]:
        assert outside not in path.read_text("utf-8"), path


def test_tables_are_not_read_at_import_time() -> None:
    code = (
        "import tracker.carbon.locations as L\n"
        "import tracker.carbon.intensity, tracker.carbon.equivalents\n"
        "assert L._catalogue.cache_info().currsize == 0"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=DATA.parent.parent)


# ----------------------------------------------------------------------------------------------
# resolve()


@pytest.mark.parametrize("text", ["DE", "de", "DEU", "deu", "Germany", "  GERMANY  "])
def test_iso2_iso3_and_english_name_resolve_to_the_same_country(text: str) -> None:
    loc = resolve(text)
    assert (loc.code, loc.name, loc.g_per_kwh, loc.year) == ("DE", "Germany", 344.14, 2024)
    assert "lifecycle" in loc.basis
    assert loc.source == "Ember, Yearly Electricity Data, May 2025 release, CC BY 4.0"
    assert loc.default_pue is None


def test_lookup_ignores_accents_and_knows_common_alternative_names() -> None:
    assert resolve("Türkiye").code == resolve("turkiye").code == resolve("Turkey").code == "TR"
    assert resolve("UK").code == resolve("United Kingdom").code == resolve("gbr").code == "GB"
    assert resolve("South Korea").code == resolve("KR").code == "KR"


def test_us_state_uses_the_state_table_and_its_basis_says_it_differs_from_the_country() -> None:
    ca = resolve("us-ca")
    assert (ca.code, ca.name, ca.g_per_kwh, ca.year) == (
        "US-CA",
        "California, United States",
        199.67,
        2024,
    )
    assert "different dataset" in ca.basis and "not directly comparable" in ca.basis
    assert ca.alternatives == (
        ("Ember country table: United States (US)", 383.55, 2024, resolve("US").basis),
    )


def test_indian_state_resolves_by_iso_code_old_code_and_name() -> None:
    assert resolve("IN-KA").name == "Karnataka, India"
    assert resolve("IN-KA").g_per_kwh == 394.41
    assert resolve("IN-TG").code == resolve("Telangana").code == "IN-TS"


def test_country_wins_over_a_us_state_of_the_same_name_and_the_state_stays_reachable() -> None:
    assert resolve("Georgia").code == "GE"
    assert resolve("US-GA").name == "Georgia, United States"
    assert resolve("Georgia, United States").code == "US-GA"
    assert resolve("washington").code == "US-WA"


def test_us_country_lists_the_state_dataset_total_as_an_alternative() -> None:
    us = resolve("USA")
    assert us.g_per_kwh == 383.55
    [(label, value, year, basis)] = us.alternatives
    assert (value, year) == (345.61, 2024)
    assert "US-TOTAL" in label and "state" in basis


def test_gcp_region_uses_googles_operational_figure_and_lists_ember_values() -> None:
    loc = resolve("gcp:us-central1")
    assert (loc.g_per_kwh, loc.year) == (412.72, 2024)
    assert "operational" in loc.basis and "Google" in loc.source
    assert [(a[1], a[2]) for a in loc.alternatives] == [(241.74, 2024), (383.55, 2024)]
    assert "Iowa" in loc.alternatives[0][0]


def test_aws_region_in_a_us_state_uses_the_ember_state_value() -> None:
    loc = resolve("AWS:US-EAST-1")
    assert (loc.code, loc.name, loc.g_per_kwh) == ("aws:us-east-1", "US East (N. Virginia)", 321.47)
    assert "Virginia" in loc.basis and "Ember" in loc.source
    assert [a[1] for a in loc.alternatives] == [383.55, 379.069]
    assert loc.alternatives[1][2] == 2020 and "eGRID2020" in loc.alternatives[1][3]


def test_cloud_region_without_a_state_uses_the_country_value() -> None:
    loc = resolve("aws:eu-west-1")
    assert (loc.g_per_kwh, loc.year) == (279.7, 2024)
    assert "Ireland" in loc.basis and loc.alternatives == ()


@pytest.mark.parametrize(
    ("code", "pue"), [("aws:us-east-1", 1.2), ("gcp:europe-west4", 1.12), ("azure:eastus", 1.12)]
)
def test_cloud_region_default_pue_is_the_providers_green_algorithms_value(
    code: str, pue: float
) -> None:
    assert resolve(code).default_pue == pue


def test_bare_region_name_resolves_when_only_one_provider_has_it() -> None:
    assert resolve("us-east-1").code == "aws:us-east-1"
    assert resolve("westeurope").code == "azure:westeurope"
    assert resolve("us-east1").code == "gcp:us-east1"


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [
        ("Germny", "Germany (DE)"),
        ("aws:eu-west-9", "aws:eu-west-1 (Europe (Ireland))"),
        ("Califronia", "California, United States (US-CA)"),
    ],
)
def test_unknown_location_error_suggests_near_matches(typo: str, suggestion: str) -> None:
    with pytest.raises(ValueError, match="did you mean") as info:
        resolve(typo)
    message = str(info.value)
    assert message.startswith(f"location {typo!r} is not known")
    assert suggestion in message


def test_unknown_location_error_explains_the_accepted_forms() -> None:
    with pytest.raises(ValueError) as info:
        resolve("QQQQQQQQ")
    message = str(info.value)
    assert "did you mean" not in message
    assert "ISO2/ISO3" in message and "aws:/gcp:/azure:" in message
    assert "`wattprint locations`" in message


def test_non_string_location_is_a_value_error_naming_location() -> None:
    with pytest.raises(ValueError, match="location must be a str"):
        resolve(276)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="query must be a str"):
        search(276)  # type: ignore[arg-type]


def test_world_is_embers_world_aggregate_and_says_it_is_a_fallback() -> None:
    loc = world()
    assert (loc.code, loc.g_per_kwh, loc.year) == ("WORLD", 472.99, 2024)
    assert "Ember" in loc.source and "aggregate" in loc.basis
    assert "no location was set" in loc.basis


# ----------------------------------------------------------------------------------------------
# search() and format_locations()


def test_search_without_query_returns_every_location_once() -> None:
    everything = search()
    assert len(everything) == 433
    assert len({loc.code for loc in everything}) == 433
    assert all(isinstance(loc, Location) for loc in everything)


def test_search_by_country_name_finds_the_cloud_regions_there() -> None:
    codes = [loc.code for loc in search("germany")]
    assert codes[0] == "DE"
    assert {"aws:eu-central-1", "azure:germanywestcentral", "gcp:europe-west3"} <= set(codes)


def test_search_by_provider_prefix_lists_that_providers_regions() -> None:
    assert len(search("gcp:")) == 44


def test_search_falls_back_to_close_matches() -> None:
    assert [loc.code for loc in search("Germny")] == ["DE"]
    assert search("qqqqqqqq") == []


def test_format_locations_lists_each_location_with_its_columns_in_a_readable_width() -> None:
    text = format_locations(search())
    lines = text.splitlines()
    assert lines[0].split() == ["CODE", "NAME", "G/KWH", "YEAR", "BASIS", "SOURCE"]
    assert len(lines) == 1 + 433 + 2
    assert lines[-2:] == [
        "433 location(s), g CO2e per kWh.",
        "Ember's state values are a different dataset from its country values.",
    ]
    assert max(len(line) for line in lines) <= 130
    de = next(line for line in lines if line.startswith("DE "))
    assert "344.1" in de and "2024" in de and "lifecycle" in de and "Ember" in de


def test_format_without_states_leaves_out_the_state_caveat() -> None:
    lines = format_locations([resolve("FR"), resolve("gcp:europe-west9")]).splitlines()
    assert lines[-1] == "2 location(s), g CO2e per kWh."


def test_format_single_location_adds_full_basis_source_pue_and_alternatives() -> None:
    text = format_locations([resolve("gcp:us-central1")])
    assert "basis:  operational" in text
    assert "default PUE: 1.12" in text
    assert "also published: 241.74 g/kWh (2024)" in text


def test_format_no_locations_says_so() -> None:
    assert "no matching location" in format_locations([])
