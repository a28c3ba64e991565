"""carbontracker scripts on wattprint: its arguments, its familiar blocks, numbers as attributes."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fake_nvml import install_no_nvml
from tests.fake_powercap import build_powercap
from tracker import CarbonTracker
from tracker.carbon.locations import resolve

SIM: dict[
    str, Any
] = {  # carbontracker's simulated hardware: 100 W x 0.5 for the CPU, 300 W x 0.8 for the GPU
    "sim_cpu": "Intel Xeon Gold 6130",
    "sim_cpu_tdp": 100,
    "sim_cpu_util": 0.5,
    "sim_gpu": "NVIDIA A100",
    "sim_gpu_watts": 300,
    "sim_gpu_util": 0.8,
}


@pytest.fixture(autouse=True)
def _no_real_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    install_no_nvml(monkeypatch)


def train(tracker: CarbonTracker, epochs: int, seconds: float = 0.05) -> None:
    for _ in range(epochs):
        tracker.epoch_start()
        time.sleep(seconds)
        tracker.epoch_end()


def block(output: str, title: str) -> dict[str, str]:
    """The fields of one printed block: {"Time": ..., "Energy": ..., "CO2eq": ...}."""
    start = output.index(f"CarbonTracker: \n{title}\n")
    fields: dict[str, str] = {}
    for line in output[start:].splitlines()[2:]:
        match = re.fullmatch(r"\t(\w+):\t(.*)", line)
        if not match:
            break
        fields[match[1]] = match[2]
    return fields


def test_carbontracker_style_script_prints_the_blocks_and_exposes_the_numbers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WATTPRINT_LOCATION", "DE")
    tracker = CarbonTracker(
        epochs=5, epochs_before_pred=1, monitor_epochs=-1, update_interval=0.05,
        interpretable=True, stop_and_confirm=False, ignore_errors=True, components="all",
        devices_by_pid=False, log_dir=str(tmp_path), log_file_prefix="ct", verbose=1,
        decimal_precision=6, api_keys=None, **SIM,
    )  # fmt: skip
    train(tracker, 1)
    assert tracker.predicted_emissions is not None and tracker.final_emissions_reported is None
    train(tracker, 2)
    tracker.stop()  # early stopping: 3 of 5 epochs

    out = capsys.readouterr().out
    assert out.startswith("CarbonTracker: The following components were found: GPU with")
    predicted = block(out, "Predicted consumption for 5 epoch(s):")
    actual = block(out, "Actual consumption for 3 epoch(s):")
    assert out.rstrip().endswith("CarbonTracker: Finished monitoring.")
    assert re.fullmatch(r"0:00:0\d", actual["Time"])
    assert actual["Energy"] == f"{tracker.actual_energy_kwh:.6f} kWh"
    assert actual["CO2eq"] == f"{tracker.final_emissions_reported:.6f} g"
    assert predicted["CO2eq"] == f"{tracker.predicted_emissions:.6f} g"
    assert "This is equivalent to:" in out and "km driven by" in out

    records = tracker.tracker.epochs
    assert [r.epoch for r in records] == [1, 2, 3] and tracker.epoch_counter == 3
    for r in records:
        watts = {d.device: d.energy_j / r.duration_s for d in r.devices if d.energy_j is not None}
        assert watts["gpu0"] == pytest.approx(300 * 0.8, rel=1e-2)  # cut skew: microseconds
        assert watts["cpu"] == pytest.approx(100 * 0.5, rel=1e-2)
        assert {d.device: d.method for d in r.devices}["gpu0"] == "estimate"
    summary = tracker.summary
    assert summary is not None and tracker.final_emissions_reported == summary.co2_g
    assert summary.facility_energy_kwh is not None
    assert summary.co2_g == pytest.approx(
        summary.facility_energy_kwh * resolve("DE").g_per_kwh, rel=1e-9
    )
    assert tracker.run_dir.parent == tmp_path / "carbontracker"
    assert tracker.run_dir.name.startswith("ct-")
    run = json.loads((tracker.run_dir / "run.json").read_text())
    assert run["status"] == "finished" and run["prediction"]["epochs"] == 5
    models = {h["device"]: h["model"] for h in run["hardware"]}
    assert models["gpu0"] == "NVIDIA A100" and models["cpu"] == "Intel Xeon Gold 6130"


def test_monitoring_ends_after_monitor_epochs_and_later_epochs_are_not_measured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tracker = CarbonTracker(
        epochs=4, monitor_epochs=2, log_dir=tmp_path, intensity=100.0, decimal_precision=4, **SIM
    )
    train(tracker, 1)
    assert tracker.final_emissions_reported is None
    train(tracker, 1)
    reported = tracker.final_emissions_reported
    assert reported is not None and reported > 0
    train(tracker, 2)  # epochs 3 and 4 run unmonitored, as in carbontracker
    tracker.stop()
    assert len(tracker.tracker.epochs) == 2 and tracker.final_emissions_reported == reported
    out = capsys.readouterr().out
    assert out.count("Actual consumption for 2 epoch(s):") == 1
    assert out.count("Finished monitoring.") == 1
    assert tracker.predicted_emissions == pytest.approx(reported * 2, rel=0.5)


def test_stop_during_an_epoch_counts_it_as_interrupted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tracker = CarbonTracker(epochs=3, epochs_before_pred=0, log_dir=tmp_path, intensity=1.0, **SIM)
    train(tracker, 1)
    tracker.epoch_start()
    time.sleep(0.05)
    tracker.stop()
    out = capsys.readouterr().out
    assert "Actual consumption:" in out and "Predicted consumption" not in out
    assert "(includes the interrupted epoch 2" in out
    assert [r.partial for r in tracker.tracker.epochs] == [False, True]


def test_unsupported_arguments_warn_and_are_recorded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tracker")  # verbose=0 logs at INFO
    tracker = CarbonTracker(
        epochs=1, log_dir=tmp_path, verbose=0, devices_by_pid=True, intensity=1.0,
        api_keys={"electricitymaps": "secret-key"}, sim_cpu="only a name",
    )  # fmt: skip
    train(tracker, 1)
    warnings = json.loads((tracker.run_dir / "run.json").read_text())["warnings"]
    text = "\n".join(warnings)
    assert "devices_by_pid=True is not supported" in text
    assert "api_keys is not used" in text and "secret-key" not in text
    assert "sim_cpu needs both sim_cpu (a name) and sim_cpu_tdp" in text
    assert any("devices_by_pid" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"monitor_epochs": 0}, "monitor_epochs must be -1, or > 0"),
        ({"epochs_before_pred": 3, "monitor_epochs": 2}, "monitor_epochs"),
        ({"components": "tpu"}, "components must be one of 'all', 'gpu', 'cpu'"),
        ({"api_keys": {"co2signal": "k"}}, "api_keys must be a dict like"),
        ({"sim_cpu": "x", "sim_cpu_tdp": 10, "sim_cpu_util": 2}, "sim_cpu_util"),
        ({"sim_gpu": "x", "sim_gpu_watts": -1}, "sim_gpu_watts"),
        ({"update_interval": 0}, "update_interval"),
        ({"update_interval": 0.01}, "update_interval must be at least 0.05"),
        ({"log_file_prefix": "a/b"}, "log_file_prefix"),
        ({"attribution": "mine"}, "attribution must be one of host, process, auto"),
    ],
)
def test_bad_arguments_raise_a_value_error_naming_them(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        CarbonTracker(epochs=3, log_dir=tmp_path, **kwargs)


def test_attribution_reaches_the_tracker_and_run_json(tmp_path: Path) -> None:
    tracker = CarbonTracker(
        epochs=1, log_dir=tmp_path, verbose=0, intensity=1.0, attribution="process", **SIM
    )
    train(tracker, 1)
    document = json.loads((tracker.run_dir / "run.json").read_text())
    assert document["attribution"]["mode"] == "process"
    assert "cpu=estimate@process" in tracker.tracker.epochs[0].methods


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_stop_and_confirm_asks_on_a_terminal_and_n_ends_after_writing_the_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", _Terminal("maybe\nn\n"))
    tracker = CarbonTracker(epochs=5, stop_and_confirm=True, log_dir=tmp_path, intensity=1.0)
    tracker.epoch_start()
    with pytest.raises(SystemExit) as ended:
        tracker.epoch_end()
    assert ended.value.code == 0
    out = capsys.readouterr().out
    assert "Continue training (y/n)?" in out and "Input not recognized" in out
    assert "Quitting..." in out and tracker.final_emissions_reported is not None
    assert json.loads((tracker.run_dir / "run.json").read_text())["status"] == "finished"


def test_stop_and_confirm_never_blocks_without_a_terminal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tracker = CarbonTracker(epochs=2, stop_and_confirm=True, log_dir=tmp_path, intensity=1.0)
    train(tracker, 2)
    out = capsys.readouterr().out
    assert "stdin is not a terminal, so not asking" in out
    assert "Actual consumption for 2 epoch(s):" in out


def test_verbose_0_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tracker = CarbonTracker(epochs=2, verbose=0, log_dir=tmp_path, intensity=1.0)
    train(tracker, 2)
    assert capsys.readouterr().out == "" and tracker.final_emissions_reported is not None


def test_unchanged_carbontracker_script_runs_with_only_the_import_changed(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(
        textwrap.dedent(
            """
            import time
            from tracker import CarbonTracker  # was: from carbontracker.tracker import ...

            max_epochs = 3
            tracker = CarbonTracker(epochs=max_epochs, log_dir="logs", components="cpu",
                                    update_interval=0.1, decimal_precision=6)
            for epoch in range(max_epochs):
                tracker.epoch_start()
                time.sleep(0.1)
                tracker.epoch_end()
            tracker.stop()
            print(tracker.final_emissions_reported)
            """
        )
    )
    root = tmp_path / "powercap"
    build_powercap(root, sockets=1)
    env = os.environ | {"WATTPRINT_POWERCAP_ROOT": str(root), "WATTPRINT_LOCATION": "FR"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Predicted consumption for 3 epoch(s):" in out
    assert "Actual consumption for 3 epoch(s):" in out
    assert "CPU with device(s) cpu0" in out and ", rapl)" in out
    assert float(out.strip().splitlines()[-1]) >= 0.0
    (run_dir,) = (tmp_path / "logs" / "carbontracker").iterdir()
    assert (run_dir / "epochs.csv").read_text().count("\n") == 4  # header + 3 epochs
