"""What a hostile user did to a run, and what the tracker must do about it.

Racing trackers on one run id, twin meters, names the file system cannot take, bytes and NUL
bytes for arguments, a run directory deleted mid-run, a live intensity source down at the start,
a program that exits without ``stop()``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.fake_nvml import SimulatedGPU, install_fake_nvml
from tests.faults.processes import child_env
from tests.faults.simulated import WAIT_S, ConstantPowerMeter
from tracker import Tracker, load_run
from tracker.carbon.intensity import IntensitySource, Provenance


def test_two_trackers_starting_on_one_run_id_cannot_both_have_it(tmp_path: Path) -> None:
    first = Tracker("p", tmp_path, run_id="job42", meters=[ConstantPowerMeter()], verbose=0)
    second = Tracker("p", tmp_path, run_id="job42", meters=[ConstantPowerMeter()], verbose=0)
    with first:
        with pytest.raises(ValueError, match=r"run_id: .*job42 already holds a run"):
            second.start()
        with first.epoch():
            pass
    assert load_run(first.run_dir)["epoch"].tolist() == [1]  # one header, numbers
    assert (first.run_dir / "epochs.csv").read_text().count("run_id,") == 1


def test_two_meters_for_one_device_are_refused(tmp_path: Path) -> None:
    twins = [ConstantPowerMeter("gpu0", 100.0), ConstantPowerMeter("gpu0", 400.0)]
    with pytest.raises(ValueError, match=r"meters must each name a different device"):
        Tracker("p", tmp_path, meters=twins)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"project": "a" * 256}, "project"),
        ({"run_id": "é" * 128}, "run_id"),
        ({"run_id": ""}, "run_id"),
        ({"components": b"cpu"}, "components"),
        ({"components": [b"cpu"]}, "components"),
        ({"log_dir": "runs\0x"}, "log_dir"),
        ({"interval": 1e10}, "interval"),
        ({"sample_period": 1e10}, "sample_period"),
        ({"verbose": 2}, "verbose"),
    ],
)
def test_input_the_file_system_or_the_sampler_cannot_take_is_refused_by_name(
    kwargs: dict[str, object], argument: str, tmp_path: Path
) -> None:
    settings: dict[str, object] = {"log_dir": tmp_path, "meters": [ConstantPowerMeter()]}
    with pytest.raises(ValueError, match=rf"^{argument} must"):
        Tracker(**(settings | kwargs))  # type: ignore[arg-type]


def test_a_run_directory_deleted_mid_run_is_written_anew_and_said(tmp_path: Path) -> None:
    tracker = Tracker("gone", tmp_path, meters=[ConstantPowerMeter()], verbose=0)
    with tracker:
        for epoch in range(4):
            if epoch == 2:  # rm -rf, which the sampler may race with a run.json rewrite
                deadline = time.monotonic() + WAIT_S
                while tracker.run_dir.exists() and time.monotonic() < deadline:
                    shutil.rmtree(tracker.run_dir, ignore_errors=True)
            with tracker.epoch():
                pass
    assert load_run(tracker.run_dir)["epoch"].tolist() == [3, 4]
    assert any("was deleted during the run" in w for w in tracker.summary.warnings)


class SilentAtFirst(IntensitySource):
    """A live source that times out for its first ``silent_s`` seconds, then says 300 g/kWh."""

    def __init__(self, silent_s: float) -> None:
        super().__init__(Provenance("feed", "a flaky feed", None, "live"))
        self._until_s = time.time() + silent_s

    def mean_g_per_kwh(self, start_unix_s: float, end_unix_s: float) -> float:
        if time.time() < self._until_s:
            raise TimeoutError("the feed did not answer")
        return 300.0


def test_a_live_source_down_at_the_start_prices_at_the_table_value_until_it_answers(
    tmp_path: Path,
) -> None:
    tracker = Tracker(
        "flaky", tmp_path, meters=[ConstantPowerMeter()], location="FR",
        intensity=SilentAtFirst(0.3), interval=0.05, verbose=0,
    )  # fmt: skip
    with tracker:
        for _ in range(4):
            with tracker.epoch():
                time.sleep(0.15)
    co2 = [r.co2_g for r in tracker.epochs]
    assert all(c is not None and c > 0 for c in co2), co2  # never NaN once lost
    summary = tracker.summary
    assert summary.co2_g is not None and summary.co2_g > 0
    assert any("using the table value" in w for w in summary.warnings)


def test_a_program_that_exits_without_stop_leaves_a_final_run_json(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        from tests.faults.simulated import ConstantPowerMeter
        from tracker import Tracker
        tracker = Tracker("exit", {str(tmp_path)!r}, run_id="r", meters=[ConstantPowerMeter()],
                          verbose=0)
        tracker.start()
        for _ in range(5):
            tracker.epoch_start()
            tracker.epoch_end()
        {{}}
        """
    )
    for ending, status in (("pass", "finished"), ("raise RuntimeError('boom')", "failed")):
        run_dir = tmp_path / "exit" / "r"
        subprocess.run(
            [sys.executable, "-c", script.format(ending)],
            env=child_env(tmp_path), capture_output=True, timeout=WAIT_S, check=False,
        )  # fmt: skip
        run = json.loads((run_dir / "run.json").read_text())
        assert (run["status"], run["totals"]["epochs"]) == (status, 5)
        assert run["totals"]["it_energy_j"] == pytest.approx(
            load_run(run_dir)["it_energy_j"].sum(), rel=1e-9
        )
        for path in run_dir.iterdir():
            path.unlink()
        run_dir.rmdir()


def test_a_discovery_caveat_is_kept_with_the_warnings_and_quiet_stays_quiet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    gpus = [SimulatedGPU(), SimulatedGPU(name="NVIDIA A100-SXM4-80GB")]
    install_fake_nvml(monkeypatch, gpus)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with Tracker("models", tmp_path, components=["gpu"], intensity=1.0, verbose=0) as t, t.epoch():
        pass
    assert capfd.readouterr().err == ""
    assert any("CUDA_DEVICE_ORDER" in w for w in t.summary.warnings)


def test_an_intensity_csv_the_csv_module_cannot_read_is_a_value_error_naming_it(
    tmp_path: Path,
) -> None:
    series = tmp_path / "huge.csv"
    series.write_text("timestamp,g_per_kwh\n2026-01-01T00:00:00Z," + "9" * 200_000 + "\n")
    with pytest.raises(ValueError, match=r"huge\.csv: not a readable CSV"):
        Tracker("p", tmp_path, intensity=str(series), meters=[ConstantPowerMeter()])


def test_carbontracker_api_keys_that_are_not_text_are_named() -> None:
    from tracker import CarbonTracker

    with pytest.raises(ValueError, match=r"^api_keys must be a dict like"):
        CarbonTracker(epochs=1, api_keys={1: "x"})  # type: ignore[dict-item]
