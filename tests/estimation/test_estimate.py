"""Estimates before a run: the issue's worked examples, each form against hand-computed values,
comparison and re-pricing, every validation error, and ``tracker.estimate`` as the README uses it.

The ``wattprint estimate`` command is tested in ``tests/cli/test_estimate.py``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.estimation.recorded_run import KWH, recorded_run
from tracker.carbon.intensity import parse_intensity
from tracker.carbon.locations import resolve
from tracker.estimation.forms import (
    DEFAULT_MFU,
    Estimate,
    compare,
    estimate,
    estimate_device_hours,
    estimate_hardware,
    estimate_training,
    from_run,
    reprice,
)
from tracker.units import format_energy, format_mass, format_number

EXACT = 1e-12
ROOT = Path(__file__).resolve().parents[2]


# --- the worked examples ---------------------------------------------------------------


def test_worked_example_ten_gpus_and_two_cpus_for_48_hours() -> None:
    # 10 x 0.3 kW x 0.8 + 2 x 0.2 kW x 0.6 = 2.4 + 0.24 = 2.64 kW; x 48 h = 126.72 kWh.
    # (The issue text says 2.88 kW / 138.24 kWh; those inputs give 2.64 kW. 2.88 kW x 48 h is
    # checked below.)
    result = estimate(["300W:10:0.8", "200W:2:0.6"], hours=48)
    assert result.power_w == pytest.approx(2640, rel=EXACT)
    assert result.energy_kwh == pytest.approx(126.72, rel=EXACT)


def test_worked_example_2_88_kw_for_48_hours_is_138_24_kwh() -> None:
    result = estimate(["2.88kW:1"], hours=48)
    assert result.energy_kwh == pytest.approx(138.24, rel=EXACT)


def test_worked_example_inference_on_four_gpus() -> None:
    result = estimate(["70W:4:0.6"], hours=10)
    assert result.power_w == pytest.approx(168, rel=EXACT)
    assert result.energy_kwh == pytest.approx(1.68, rel=EXACT)


def test_worked_example_1000_w_for_100_hours_at_half_a_kilo_per_kwh() -> None:
    result = estimate(["1000W:1"], hours=100, intensity=500)
    assert result.co2_g == pytest.approx(50_000, rel=EXACT)


# --- form 1: hardware list x time ------------------------------------------------------------


def test_hardware_list_looks_up_gpu_and_cpu_ratings() -> None:
    # 8 x 700 W x 0.9 + 2 x 280 W x 0.5 = 5040 + 280 = 5320 W; x 10 h = 53.2 kWh
    result = estimate_hardware(["H100:8:0.9", "AMD EPYC 7763 64-Core Processor:2:0.5"], 10)
    assert result.power_w == pytest.approx(5320, rel=EXACT)
    assert result.energy_kwh == pytest.approx(53.2, rel=EXACT)
    assert [d.rating.key for d in result.devices] == ["h100-sxm5", "AMD EPYC 7763"]
    assert result.pue == 1.0 and result.co2_g is None


def test_hardware_list_priced_in_a_country_uses_its_intensity() -> None:
    germany = resolve("DE")
    result = estimate_hardware(["H100:8:0.9"], 10, pue=1.1, location="DE")
    assert result.facility_energy_kwh == pytest.approx(50.4 * 1.1, rel=EXACT)
    assert result.co2_g == pytest.approx(50.4 * 1.1 * germany.g_per_kwh, rel=EXACT)
    assert result.location == "DE"
    assert str(germany.year) in result.intensity_source


def test_cloud_region_brings_its_provider_pue_unless_one_is_given() -> None:
    region = resolve("aws:us-east-1")
    assert region.default_pue is not None
    default = estimate_hardware(["1000W:1"], 1, location="aws:us-east-1")
    assert default.pue == region.default_pue
    assert default.co2_g == pytest.approx(region.default_pue * region.g_per_kwh, rel=EXACT)
    given = estimate_hardware(["1000W:1"], 1, location="aws:us-east-1", pue=1.05)
    assert given.pue == 1.05


def test_a_bare_model_name_means_full_utilisation() -> None:
    result = estimate_hardware(["T4:2"], 1)
    assert result.power_w == pytest.approx(140, rel=EXACT)


# --- form 2: device-hours --------------------------------------------------------------------


def test_device_hours_reproduce_a_published_training_report() -> None:
    # 1,022,362 A100-hours x 400 W x PUE 1.1 x 385 g/kWh (the form of Touvron et al., 2023, LLaMA)
    result = estimate_device_hours(1_022_362, "A100-80GB", pue=1.1, intensity=385)
    assert result.energy_kwh == pytest.approx(408_944.8, rel=EXACT)
    assert result.facility_energy_kwh == pytest.approx(449_839.28, rel=EXACT)
    assert result.co2_g == pytest.approx(173_188_122.8, rel=EXACT)
    assert format_energy(result.facility_energy_j) == "449.839 MWh"
    assert format_mass(result.co2_g or 0) == "173.188 t"


def test_device_hours_with_count_give_wall_time_and_utilisation_scales_power() -> None:
    result = estimate_device_hours(1000, "500W", utilisation=0.6, count=8)
    assert result.energy_kwh == pytest.approx(300, rel=EXACT)  # 1000 h x 300 W
    assert result.duration_s == pytest.approx(125 * 3600, rel=EXACT)
    assert result.power_w == pytest.approx(2400, rel=EXACT)


# --- form 3: from model and data -------------------------------------------------------------


def test_training_estimate_from_parameters_and_tokens() -> None:
    # 6 x 1e9 x 1e10 = 6e19 FLOP; 100 TFLOP/s x 0.5 = 5e13 FLOP/s -> 1.2e6 device-s = 333.3 h;
    # 4 devices -> 83.3 h wall; 1.2e6 s x 500 W = 6e8 J = 166.67 kWh
    result = estimate_training(1e9, 1e10, "500W", count=4, mfu=0.5, peak_tflops=100)
    assert result.device_hours == pytest.approx(1.2e6 / 3600, rel=EXACT)
    assert result.duration_s == pytest.approx(3e5, rel=EXACT)
    assert result.energy_j == pytest.approx(6e8, rel=EXACT)
    assert result.power_w == pytest.approx(2000, rel=EXACT)
    steps = {s.name: s.value for s in result.steps}
    assert steps["training compute C = 6·N·D"] == pytest.approx(6e19, rel=EXACT)
    assert steps["achieved throughput per device"] == pytest.approx(50, rel=EXACT)


def test_training_estimate_takes_peak_throughput_from_the_table() -> None:
    result = estimate_training(7e9, 2e12, "NVIDIA H100 80GB HBM3", count=64)
    peak = next(s for s in result.steps if s.name == "peak dense throughput per device")
    assert peak.value == 989.5
    assert "datasheet" in peak.note
    device_s = 6 * 7e9 * 2e12 / (989.5e12 * DEFAULT_MFU)
    assert result.device_hours == pytest.approx(device_s / 3600, rel=EXACT)
    assert result.energy_j == pytest.approx(device_s * 700, rel=EXACT)
    mfu = next(s for s in result.steps if s.name == "MFU")
    assert mfu.note == "assumed default"


def test_training_precision_changes_the_peak() -> None:
    bf16 = estimate_training(1e9, 1e10, "H100", precision="bf16")
    fp8 = estimate_training(1e9, 1e10, "H100", precision="fp8")
    assert bf16.energy_j == pytest.approx(2 * fp8.energy_j, rel=EXACT)


# --- form 4: compare, re-price, recorded runs ------------------------------------------------


def test_compare_ranks_locations_by_emissions() -> None:
    option = estimate_hardware(["H100:8"], 24)
    rows = compare([option], ["PL", "FR", "DE"])
    intensities = [resolve(code).g_per_kwh for code in ("PL", "FR", "DE")]
    assert [r.location for r in rows] == [
        code for _, code in sorted(zip(intensities, ["PL", "FR", "DE"], strict=True))
    ]
    assert all(r.energy_j == option.energy_j for r in rows)


def test_compare_without_intensity_ranks_by_energy() -> None:
    options = [estimate_hardware([spec], 10) for spec in ("H100:8", "A100:8", "T4:8")]
    assert [r.devices[0].rating.key for r in compare(options)] == [
        "t4",
        "a100-sxm4-40gb",
        "h100-sxm5",
    ]


def test_reprice_keeps_a_given_pue_and_changes_the_intensity() -> None:
    option = estimate_hardware(["1000W:1"], 10, pue=1.3, intensity=100)
    moved = reprice(option, intensity=200)
    assert moved.pue == 1.3
    assert moved.co2_g == pytest.approx(10 * 1.3 * 200 * 1000 / 1000, rel=EXACT)


def test_recorded_run_is_repriced_in_each_location_with_its_prediction(tmp_path: Path) -> None:
    rows = from_run(recorded_run(tmp_path, {"energy_j": 25 * KWH}), ["FR", "PL"])
    assert [(r.label, r.location) for r in rows] == [
        ("measured", "FR"),
        ("measured", "PL"),
        ("predicted full run", "FR"),
        ("predicted full run", "PL"),
    ]
    assert rows[0].co2_g == pytest.approx(10 * 1.5 * resolve("FR").g_per_kwh, rel=EXACT)
    assert rows[3].co2_g == pytest.approx(25 * 1.5 * resolve("PL").g_per_kwh, rel=EXACT)
    assert rows[0].duration_s == 7200.0


def test_recorded_run_without_prediction_and_with_a_pue_override(tmp_path: Path) -> None:
    rows = from_run(recorded_run(tmp_path, None), intensity=100, pue=1.0)
    assert len(rows) == 1
    assert rows[0].co2_g == pytest.approx(10 * 100, rel=EXACT)


def test_missing_run_json_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"run\.json"):
        from_run(tmp_path, ["FR"])


def test_malformed_run_json_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_text('{"totals": {}}', encoding="utf-8")
    with pytest.raises(ValueError, match=r"not a wattprint run\.json"):
        from_run(tmp_path, ["FR"])


def test_recorded_run_needs_somewhere_to_be_priced(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="location"):
        from_run(recorded_run(tmp_path, None))


# --- validation: every input error names what is wrong ----------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: estimate(["H100:8:1.5"], hours=1), "utilisation"),
        (lambda: estimate(["H100:8:-0.1"], hours=1), "utilisation"),
        (lambda: estimate(["H100:8:high"], hours=1), "utilisation"),
        (lambda: estimate(["H100:-2"], hours=1), "count"),
        (lambda: estimate(["H100:0"], hours=1), "count"),
        (lambda: estimate(["H100:2.5"], hours=1), "count"),
        (lambda: estimate(["H100"], hours=1), "MODEL:COUNT"),
        (lambda: estimate(["-300W:1"], hours=1), "watts"),
        (lambda: estimate([], hours=1), "empty"),
        (lambda: estimate(["H100:1"], hours=-1), "hours"),
        (lambda: estimate(["H100:1"]), "hours"),
        (lambda: estimate(["H100:1"], hours=1, pue=0.9), "pue"),
        (lambda: estimate(["H100:1"], hours=1, pue=True), "pue"),  # a bool, as for a Tracker
        (lambda: estimate(["H100:1"], hours=1, intensity=-5), "intensity"),
        (lambda: estimate(["H100:1"], hours=1, location="Atlantis"), "Atlantis"),
        (lambda: estimate(["H100:1"], hours=1, location="DE", intensity=300), "not both"),
        (lambda: estimate(device_hours=-1, device="H100"), "device_hours"),
        (lambda: estimate(device_hours=10), "device"),
        (lambda: estimate(device_hours=10, device="H100", utilisation=2), "utilisation"),
        (lambda: estimate(device_hours=10, device="H100", count=-1), "count"),
        (lambda: estimate(params=-1, tokens=1e9, device="H100"), "params"),
        (lambda: estimate(params=1e9, tokens=0, device="H100"), "tokens"),
        (lambda: estimate(params=1e9, device="H100"), "tokens"),
        (lambda: estimate(params=1e9, tokens=1e9, device="H100", mfu=0), "mfu"),
        (lambda: estimate(params=1e9, tokens=1e9, device="H100", mfu=1.2), "mfu"),
        (lambda: estimate(params=1e9, tokens=1e9, device="H100", precision="fp4"), "precision"),
        (lambda: estimate(params=1e9, tokens=1e9, device="V100", precision="bf16"), "fp16, fp32"),
        (lambda: estimate(params=1e9, tokens=1e9, device="RTX A6000"), "--peak-tflops"),
        (lambda: estimate(params=1e9, tokens=1e9, device="300W"), "--peak-tflops"),
        (lambda: estimate(params=1e9, tokens=1e9, device="H100", count=0), "count"),
        (lambda: estimate(["H100:1"], hours=1, device_hours=5), "exactly one"),
        (lambda: estimate(), "exactly one"),
    ],
)
def test_invalid_input_is_rejected_with_a_message_naming_it(call: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


def test_unknown_model_suggests_close_matches() -> None:
    with pytest.raises(ValueError, match=r"unknown device 'H100 SXM4'.*close matches: h100-sxm5"):
        estimate(["H100 SXM4:8"], hours=1)
    with pytest.raises(ValueError, match="AMD EPYC 7763"):
        estimate(["AMD EPYC 7764:2"], hours=1)


@pytest.mark.parametrize(
    ("text", "g_per_kwh"),
    [("500", 500.0), ("500g/kWh", 500.0), ("0.5kg/kWh", 500.0), ("0.5 kgCO2e/kWh", 500.0)],
)
def test_intensity_accepts_explicit_units(text: str, g_per_kwh: float) -> None:
    assert parse_intensity(text) == pytest.approx(g_per_kwh, rel=EXACT)


@pytest.mark.parametrize("text", ["lots", "-5", "5 lb/kWh", "nan", "5kg", "500g"])
def test_intensity_rejects_what_is_not_g_per_kwh(text: str) -> None:
    with pytest.raises(ValueError, match="intensity"):
        parse_intensity(text)


def test_numbers_print_in_readable_units() -> None:
    assert format_number(138.23999999999998) == "138.24"
    assert format_number(1_022_362) == "1,022,362"
    assert format_energy(1.68 * KWH) == "1.68 kWh"
    assert format_energy(2.5e6 * KWH) == "2.5 GWh"
    assert format_mass(999) == "999 g"
    assert format_mass(1500) == "1.5 kg"


README_EXAMPLE = """\
import tracker

plan = tracker.estimate(["H100:8:0.9"], hours=72, location="DE")
print(f"{plan.facility_energy_kwh:,.1f} kWh, {plan.co2_g / 1000:,.1f} kg CO2e")
# 362.9 kWh, 124.9 kg CO2e
"""


@pytest.mark.parametrize(
    "imported_before",
    [
        "",
        "import tracker.cli.estimate\n",
        "import tracker.cli.main\ntracker.cli.main.main(['estimate', '1W:1', '--hours', '1'])\n",
    ],
    ids=["fresh", "after-estimate_cli", "after-the-cli-ran"],
)
def test_the_readme_python_example_runs_as_written(imported_before: str) -> None:
    assert f"```python\n{README_EXAMPLE}```" in (ROOT / "README.md").read_text(encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", imported_before + README_EXAMPLE],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("362.9 kWh, 124.9 kg CO2e\n")


def test_import_tracker_leaves_the_estimate_modules_unloaded_until_used() -> None:
    probe = (
        "import sys, tracker\n"
        "print(sorted(m for m in sys.modules if m.startswith('tracker.estimat')))\n"
        "from tracker import estimate\n"
        "print(estimate is tracker.estimate, callable(estimate))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "[]\nTrue True\n"


def test_estimate_result_type_is_exported() -> None:
    assert isinstance(estimate(["1W:1"], hours=1), Estimate)
