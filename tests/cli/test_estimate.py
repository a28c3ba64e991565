"""``wattprint estimate``: the issue's worked examples as printed, the detail, table and JSON
output, a recorded run re-priced, bad input, and the command in a subprocess."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.estimation.recorded_run import KWH, recorded_run
from tracker.cli.estimate import register

EXACT = 1e-12
ROOT = Path(__file__).resolve().parents[2]


def run_cli(*argv: str) -> None:
    """Parse ``wattprint estimate ARGV`` with the real subparser and run its handler."""
    parser = argparse.ArgumentParser(prog="wattprint")
    register(parser.add_subparsers())
    args = parser.parse_args(["estimate", *argv])
    assert args.handler(args) == 0


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    def call(*argv: str) -> str:
        run_cli(*argv)
        return capsys.readouterr().out

    return call


# --- the worked examples, as printed ------------------------------------------------


def test_worked_example_ten_gpus_and_two_cpus_for_48_hours_as_printed(cli: Any) -> None:
    out = cli("300W:10:0.8", "0.2kW:2:0.6", "--hours", "48")
    assert "2.64 kW" in out
    assert "126.72 kWh" in out


def test_worked_example_2_88_kw_for_48_hours_is_138_24_kwh_as_printed(cli: Any) -> None:
    out = cli("2880W:1", "--hours", "48")
    assert "2.88 kW" in out
    assert "138.24 kWh" in out


def test_worked_example_inference_on_four_gpus_as_printed(cli: Any) -> None:
    out = cli("70W:4:0.6", "--hours", "10")
    assert "0.168 kW" in out
    assert "1.68 kWh" in out


def test_worked_example_1000_w_for_100_hours_at_half_a_kilo_per_kwh_as_printed(cli: Any) -> None:
    out = cli("1000W:1", "--hours", "100", "--intensity", "0.5kg/kWh")
    assert "100 kWh" in out
    assert "50 kg CO2e" in out


# --- detail, table and JSON output, re-pricing, bad input ------------------------------------


def test_cli_json_output_carries_every_quantity(cli: Any) -> None:
    out = cli("1000W:1", "--hours", "100", "--intensity", "500", "--json")
    (row,) = json.loads(out)["estimates"]
    assert row["form"] == "hardware"
    assert row["energy_kwh"] == pytest.approx(100, rel=EXACT)
    assert row["co2_g"] == pytest.approx(50_000, rel=EXACT)
    assert {s["name"] for s in row["steps"]} >= {"IT power P = sum(P_i x U_i)", "emissions"}


def test_cli_model_form_shows_every_intermediate_quantity(cli: Any) -> None:
    out = cli("--params", "7B", "--tokens", "2T", "--device", "H100", "--count", "64")
    for name in ("6·N·D", "peak dense throughput", "MFU", "device-hours", "wall time", "IT power"):
        assert name in out
    assert "8.4e22 FLOP" in out


def test_cli_compares_devices_and_locations_in_a_ranked_table(cli: Any) -> None:
    out = cli(
        "--params", "7B", "--tokens", "2T", "--device", "H100", "--device", "A100",
        "--count", "64", "--location", "DE", "--location", "FR",
    )  # fmt: skip
    lines = out.splitlines()
    assert lines[0] == "Options compared, best first"
    ranked = [line for line in lines if line[:1].isdigit()]
    assert len(ranked) == 4
    assert "h100-sxm5" in ranked[0] and "FR" in ranked[0]


def test_cli_compares_hardware_lists_with_vs(cli: Any) -> None:
    out = cli("H100:8", "--vs", "A100:16", "--hours", "100", "--intensity", "100")
    ranked = [line for line in out.splitlines() if line[:1].isdigit()]
    assert "16 x a100-sxm4-40gb" in ranked[1]  # 6.4 kW vs 5.6 kW: the H100s rank first


def test_cli_reprices_a_recorded_run(cli: Any, tmp_path: Path) -> None:
    run_dir = recorded_run(tmp_path, {"energy_j": 25 * KWH})
    out = cli("--from-run", str(run_dir), "--location", "FR", "--location", "SE")
    assert "measured" in out and "predicted full run" in out


@pytest.mark.parametrize(
    "argv",
    [
        ("300W:10:1.2", "--hours", "1"),
        ("300W:-1", "--hours", "1"),
        ("300W:1", "--hours", "-1"),
        ("300W:1", "--hours", "1", "--pue", "0.8"),
        ("Z999:1", "--hours", "1"),
        (),
        ("--from-run", "/nonexistent/run", "--location", "FR"),
    ],
)
def test_cli_rejects_bad_input_with_an_exception_the_entry_point_reports(
    argv: tuple[str, ...],
) -> None:
    with pytest.raises((ValueError, FileNotFoundError)):
        run_cli(*argv)


def test_wattprint_estimate_runs_as_a_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tracker.cli", "estimate", "70W:4:0.6", "--hours", "10"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "0.168 kW" in done.stdout and "1.68 kWh" in done.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "tracker.cli", "estimate", "70W:4:1.6", "--hours", "10"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
    )
    assert bad.returncode == 2
    assert "utilisation" in bad.stderr


def _wattprint_estimate(*argv: str, location: str) -> subprocess.CompletedProcess[str]:
    environment = os.environ | {"WATTPRINT_LOCATION": location}
    return subprocess.run(
        [sys.executable, "-m", "tracker.cli", "estimate", *argv],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
    )


def test_wattprint_estimate_prices_in_the_location_the_environment_names() -> None:
    done = _wattprint_estimate("1000W:1", "--hours", "100", location="FR")
    assert done.returncode == 0, done.stderr
    assert "44.18 g/kWh" in done.stdout and "France (FR)" in done.stdout
    assert "emissions 4.418 kg CO2e" in done.stdout  # 100 kWh x 44.18 g/kWh
    given = _wattprint_estimate("1000W:1", "--hours", "100", "--intensity", "500", location="FR")
    assert "emissions 50 kg CO2e" in given.stdout  # an explicit intensity wins
    placed = _wattprint_estimate("1000W:1", "--hours", "100", "--location", "SE", location="FR")
    assert "(SE)" in placed.stdout and "(FR)" not in placed.stdout
    bad = _wattprint_estimate("1000W:1", "--hours", "100", location="Atlantis")
    assert bad.returncode == 2
    assert bad.stderr.startswith("wattprint: error: WATTPRINT_LOCATION: location 'Atlantis'")
