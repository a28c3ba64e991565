"""Bad input through every public entry point: a clear error naming the problem, raised by
wattprint's own checks (not from deep inside pathlib or a backend), before any work starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fake_nvml import SimulatedGPU, install_fake_nvml
from tests.faults.simulated import ConstantPowerMeter
from tracker import CarbonTracker, Tracker, load_run, track
from tracker.cli.main import main

PACKAGES = tuple(
    str(Path(__file__).resolve().parents[2] / name) for name in ("tracker", "backends")
)


def raised_by_wattprint(excinfo: pytest.ExceptionInfo[BaseException]) -> bool:
    """Whether the error was raised in wattprint's code rather than by a library under it."""
    return str(excinfo.traceback[-1].path).startswith(PACKAGES)


def quiet_tracker(tmp_path: Path) -> Tracker:
    return Tracker("p", tmp_path, meters=[ConstantPowerMeter()], components=["gpu"], verbose=0)


TRACKER_ARGUMENTS: list[tuple[dict[str, Any], str]] = [
    ({"project": ""}, "project"),
    ({"project": "a/b"}, "project"),
    ({"project": None}, "project"),
    ({"log_dir": 123}, "log_dir"),
    ({"log_dir": ""}, "log_dir"),
    ({"run_id": "../x"}, "run_id"),
    ({"interval": 0}, "interval"),
    ({"interval": "1"}, "interval"),
    ({"interval": float("nan")}, "interval"),
    ({"sample_period": -1}, "sample_period"),
    ({"location": "XX"}, "location"),
    ({"location": "Germny"}, r"Germany \(DE\)"),  # names the near match
    ({"location": ""}, "location"),
    ({"location": 12}, "location"),
    ({"intensity": -3}, "intensity"),
    ({"intensity": float("inf")}, "intensity"),
    ({"intensity": "abc"}, "intensity"),
    ({"intensity": [1, 2]}, "intensity"),
    ({"pue": 0.5}, "pue"),
    ({"pue": "high"}, "pue"),
    ({"gpus": 5}, "gpus"),
    ({"gpus": "0,1"}, "gpus"),
    ({"gpus": [-1]}, "gpus"),
    ({"gpus": ["-1"]}, "gpus"),
    ({"components": ["gpu", "tpu"]}, "components"),
    ({"components": "gpu"}, "components"),
    ({"components": None}, "components"),
    ({"meters": [1]}, "meters"),
    ({"meters": 5}, "meters"),
    ({"verbose": "loud"}, "verbose"),
    ({"on_epoch_end": print}, "on_epoch_end"),
    ({"on_epoch_end": [1]}, "on_epoch_end"),
    ({"rapl_reader": "msr"}, "rapl_reader"),
    ({"epochs": 0}, "epochs"),
]


@pytest.mark.parametrize(
    ("kwargs", "named"), TRACKER_ARGUMENTS, ids=[str(k) for k, _ in TRACKER_ARGUMENTS]
)
def test_tracker_arguments_fail_at_once_naming_the_argument(
    kwargs: dict[str, Any], named: str, tmp_path: Path
) -> None:
    kwargs.setdefault("log_dir", tmp_path)
    with pytest.raises(ValueError, match=named) as excinfo:
        Tracker(**kwargs)
    assert raised_by_wattprint(excinfo)
    assert not any(tmp_path.iterdir())  # nothing was started or written


def test_an_unknown_location_in_the_environment_names_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WATTPRINT_LOCATION", "Atlantis")
    with pytest.raises(ValueError, match="WATTPRINT_LOCATION: location 'Atlantis' is not known"):
        Tracker()


def test_a_gpu_that_is_not_there_is_named_before_anything_is_written(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_fake_nvml(monkeypatch, [SimulatedGPU()])
    tracker = Tracker("p", tmp_path, gpus=[3], intensity=1.0, verbose=0)
    with pytest.raises(ValueError, match=r"gpus: 3 names no GPU.*available: 0 \(GPU-") as excinfo:
        tracker.start()
    assert raised_by_wattprint(excinfo) and not any(tmp_path.iterdir())


BAD_SERIES = [
    ("time,g_per_kwh\n2025-01-02T00:00:00Z,100\n2025-01-01T00:00:00Z,90\n", "line 3: timestamp"),
    ("when,value_g\n1,2\n", "line 1: header"),
    ("time,g_per_kwh\n2025-01-01T00:00:00Z,-5\n", "line 2: intensity '-5'"),
    ("time,g_per_kwh\nyesterday,5\n", "line 2: timestamp 'yesterday'"),
    ("time,g_per_kwh\n2025-01-01T00:00:00Z\n", "line 2: expected 2 columns"),
    ("", "no data rows"),
]


@pytest.mark.parametrize(("text", "problem"), BAD_SERIES, ids=[p for _, p in BAD_SERIES])
def test_a_bad_intensity_series_names_the_file_and_line(
    text: str, problem: str, tmp_path: Path
) -> None:
    series = tmp_path / "grid.csv"
    series.write_text(text)
    with pytest.raises(ValueError, match=problem) as excinfo:
        Tracker(log_dir=tmp_path / "runs", intensity=series)
    assert str(series) in str(excinfo.value) and raised_by_wattprint(excinfo)


MISUSE: list[tuple[str, Callable[[Tracker], object], str]] = [
    ("end-without-start", lambda t: t.epoch_end(), r"epoch_end\(\) called without"),
    ("start-twice", lambda t: (t.epoch_start(), t.epoch_start()), r"epoch 1 is open"),
    ("start-after-stop", lambda t: (t.start(), t.stop(), t.epoch_start()), r"after stop\(\)"),
    ("restart", lambda t: (t.start(), t.stop(), t.start()), "was stopped"),
    ("callback", lambda t: t.add_epoch_callback(5), "add_epoch_callback"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("case", "misuse", "message"), MISUSE, ids=[m[0] for m in MISUSE])
def test_hook_misuse_is_a_value_error_that_says_what_to_do(
    case: str, misuse: Callable[[Tracker], object], message: str, tmp_path: Path
) -> None:
    tracker = quiet_tracker(tmp_path)
    try:
        with pytest.raises(ValueError, match=message):
            misuse(tracker)
    finally:
        tracker.stop()


def test_track_checks_what_it_decorates_and_its_arguments_when_applied() -> None:
    with pytest.raises(ValueError, match="track's argument must be a function"):
        track(5)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="pue"):
        track(pue=0.2)  # at decoration, not at the first call an hour later


def test_load_run_names_what_is_wrong(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a wattprint run directory"):
        load_run(tmp_path)
    with pytest.raises(ValueError, match="at most one of devices=True and samples=True"):
        load_run(tmp_path, devices=True, samples=True)
    with pytest.raises(ValueError, match="run_dir") as excinfo:
        load_run(5)  # type: ignore[arg-type]
    assert raised_by_wattprint(excinfo)


CLI = [
    ["run", "--pue", "0.5", "--", "true"],
    ["run", "--pue", "high", "--", "true"],
    ["run", "--interval", "0", "--", "true"],
    ["run", "--location", "XX", "--", "true"],
    ["run", "--intensity", "abc", "--", "true"],
    ["run", "--intensity", "-5", "--", "true"],
    ["run", "--project", "a/b", "--", "true"],
    ["run", "--gpus", "7", "--location", "DE", "--", "true"],
    ["run", "--location", "DE", "--", "/nonexistent/train"],
    ["run"],
    ["locations", "Atlantis"],
    ["devices", "--rapl-reader", "msr"],
    ["nonsense"],
    ["estimate"],
    ["estimate", "H100:2", "--hours", "-1"],
    ["estimate", "H999:1", "--hours", "2"],
    ["estimate", "--from-run", "/nonexistent"],
]


@pytest.mark.parametrize("argv", CLI, ids=[" ".join(a) for a in CLI])
def test_cli_user_errors_exit_2_with_one_error_line_and_no_traceback(
    argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    install_fake_nvml(monkeypatch, [SimulatedGPU()])
    monkeypatch.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as leaving:  # argparse's own usage errors
        code = int(leaving.code or 0)
    err = capsys.readouterr().err
    assert code == 2
    assert "error:" in err and "Traceback" not in err
    assert not (tmp_path / "wattprint-runs").exists()  # refused before a run was started


def test_cli_names_the_line_of_a_bad_intensity_series(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    series = tmp_path / "grid.csv"
    series.write_text("time,g_per_kwh\n2025-01-01T00:00:00Z,lots\n")
    monkeypatch.chdir(tmp_path)
    assert main(["run", "--intensity", os.fspath(series), "--", "true"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"wattprint: error: {series}: line 2: intensity 'lots'")


CARBONTRACKER_ARGUMENTS: list[tuple[dict[str, Any], str]] = [
    ({"epochs": 0}, "epochs"),
    ({"epochs": "10"}, "epochs"),
    ({"epochs": 3, "epochs_before_pred": -2}, "epochs_before_pred"),
    ({"epochs": 3, "monitor_epochs": 0}, "monitor_epochs"),
    ({"epochs": 3, "update_interval": 0}, "update_interval"),
    ({"epochs": 3, "components": "tpu"}, "components"),
    ({"epochs": 3, "components": ["gpu"]}, "components"),
    ({"epochs": 3, "log_file_prefix": "a/b"}, "log_file_prefix"),
    ({"epochs": 3, "log_dir": 123}, "log_dir"),
    ({"epochs": 3, "verbose": "loud"}, "verbose"),
    ({"epochs": 3, "decimal_precision": -1}, "decimal_precision"),
    ({"epochs": 3, "api_keys": "abc"}, "api_keys"),
    ({"epochs": 3, "sim_cpu": "Xeon", "sim_cpu_tdp": -5}, "sim_cpu_tdp"),
    ({"epochs": 3, "sim_cpu": "Xeon", "sim_cpu_tdp": 100, "sim_cpu_util": 2}, "sim_cpu_util"),
    ({"epochs": 3, "sim_gpu": "A100", "sim_gpu_watts": "lots"}, "sim_gpu_watts"),
    ({"epochs": 3, "pue": 0.5}, "pue"),
    ({"epochs": 3, "location": "XX"}, "location"),
]


@pytest.mark.parametrize(
    ("kwargs", "named"), CARBONTRACKER_ARGUMENTS, ids=[str(k) for k, _ in CARBONTRACKER_ARGUMENTS]
)
def test_carbontracker_arguments_fail_at_once_naming_the_argument(
    kwargs: dict[str, Any], named: str, tmp_path: Path
) -> None:
    kwargs.setdefault("log_dir", tmp_path)
    with pytest.raises(ValueError, match=named) as excinfo:
        CarbonTracker(**kwargs)
    assert raised_by_wattprint(excinfo)
    assert not any(tmp_path.iterdir())
