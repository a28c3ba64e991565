"""The live tracker end to end: simulated GPUs and powercap at the boundary, all else real."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fake_nvml import SimulatedGPU, install_fake_nvml, install_no_nvml, step_profile
from tests.fake_powercap import FakeZone, build_powercap, honour_file_modes
from tracker import EpochRecord, Tracker, load_run, track

RAPL_W = {"cpu0": 90.0, "cpu1": 70.0, "dram0": 12.0, "dram1": 9.0}
EPOCH_S = 1.2
GAP_S = 0.3
SCHEDULE_T0 = [0.0]  # when the `gpus` fixture's first epoch is due (monotonic s)


@pytest.fixture
def powercap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, FakeZone]:
    """A two-socket tree whose counters wrap every ~0.8 s at the simulated power."""
    root = tmp_path / "powercap"
    zones = build_powercap(root, sockets=2, max_energy_range_uj=80_000_000)
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(root))
    return zones


def drive_rapl(
    zones: dict[str, FakeZone], seconds: float, step_s: float = 0.01
) -> dict[str, float]:
    """Advance the RAPL counters at RAPL_W for ``seconds``; return the joules added per zone."""
    added = dict.fromkeys(RAPL_W, 0.0)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for name, watts in RAPL_W.items():
            zones[name].add_energy_j(watts * step_s)
            added[name] += round(watts * step_s * 1e6) / 1e6
        time.sleep(step_s)
    return added


def sleep_until(t_s: float) -> None:
    time.sleep(max(0.0, t_s - time.monotonic()))


@pytest.fixture
def gpus(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[SimulatedGPU]]:
    """GPU 0 has the energy counter and changes power mid-epoch; GPU 1 is power-only.

    Epoch k runs over [t0 + k*(EPOCH_S+GAP_S), ... + EPOCH_S]; GPU 1 changes power in the gaps.
    """
    t0 = time.monotonic() + 0.5
    period = EPOCH_S + GAP_S
    counter_steps = [(t0 - 10, 150.0)]
    power_steps = [(t0 - 10, 120.0)]
    for k in range(4):
        start = t0 + k * period
        counter_steps += [(start + 0.3, 200.0 + 60 * k), (start + 0.5, 320.0 - 30 * k)]
        power_steps += [(start - GAP_S / 2, 180.0 + 50 * k)]
    simulated = [
        SimulatedGPU(power_w=step_profile(counter_steps), read_delay_s=0.004),
        SimulatedGPU(
            name="Tesla P100-PCIE-16GB", power_w=step_profile(power_steps), has_counter=False
        ),
    ]
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    install_fake_nvml(monkeypatch, simulated)
    SCHEDULE_T0[0] = t0
    yield simulated


def test_epoch_energy_matches_simulated_truth_per_device(
    gpus: list[SimulatedGPU], powercap: dict[str, FakeZone], tmp_path: Path
) -> None:
    t0 = SCHEDULE_T0[0]
    added: list[dict[str, float]] = []
    records: list[EpochRecord] = []
    with Tracker("truth", tmp_path / "runs", location="DE", verbose=0) as tracker:
        for k in range(3):
            sleep_until(t0 + k * (EPOCH_S + GAP_S))
            tracker.epoch_start()
            added.append(drive_rapl(powercap, EPOCH_S))
            records.append(tracker.epoch_end())
    for record, rapl_truth in zip(records, added, strict=True):
        by_device = {d.device: d for d in record.devices}
        counter_truth = gpus[0].energy_j(record.start_s, record.end_s)
        power_truth = gpus[1].energy_j(record.start_s, record.end_s)
        assert by_device["gpu0"].method == "counter"
        assert by_device["gpu0"].energy_j == pytest.approx(counter_truth, rel=1e-3)
        assert by_device["gpu1"].method == "power"
        assert by_device["gpu1"].energy_j == pytest.approx(power_truth, rel=1e-2)
        for name, truth in rapl_truth.items():
            assert by_device[name].method == "rapl"
            assert by_device[name].energy_j == pytest.approx(truth, rel=1e-3), name
        assert record.gpu_energy_j == pytest.approx(counter_truth + power_truth, rel=1e-2)
        assert record.cpu_energy_j == pytest.approx(
            rapl_truth["cpu0"] + rapl_truth["cpu1"], rel=1e-3
        )
    run_total = sum(r.it_energy_j or math.nan for r in records)
    assert tracker.summary.it_energy_j == pytest.approx(run_total)
    epochs = load_run(tracker.run_dir)
    assert list(epochs["epoch"]) == [1, 2, 3]
    assert epochs["it_energy_j"].sum() == pytest.approx(run_total, rel=1e-6)


def test_epoch_shorter_than_sampling_interval_still_gets_its_energy(
    gpus: list[SimulatedGPU], powercap: dict[str, FakeZone], tmp_path: Path
) -> None:
    with Tracker("short", tmp_path, interval=5.0, verbose=0, intensity=300.0) as tracker:
        tracker.epoch_start()
        powercap["cpu0"].add_energy_j(3.0)
        time.sleep(0.05)
        record = tracker.epoch_end()
    by_device = {d.device: d for d in record.devices}
    assert by_device["cpu0"].energy_j == pytest.approx(3.0, rel=1e-6)
    for index, gpu in enumerate(gpus):
        energy = by_device[f"gpu{index}"].energy_j
        assert energy is not None and energy > 0
        assert energy == pytest.approx(gpu.energy_j(record.start_s, record.end_s), rel=1e-2)


def test_co2_is_energy_times_pue_times_constant_intensity(
    gpus: list[SimulatedGPU], tmp_path: Path
) -> None:
    with Tracker("co2", tmp_path, intensity=400.0, pue=1.5, verbose=0) as tracker, tracker.epoch():
        time.sleep(0.3)
    record = tracker.epochs[0]
    assert record.it_energy_j is not None and record.facility_energy_kwh is not None
    assert record.facility_energy_kwh == pytest.approx(record.it_energy_j * 1.5 / 3.6e6)
    assert record.co2_g == pytest.approx(record.facility_energy_kwh * 400.0)
    assert record.intensity_g_per_kwh == pytest.approx(400.0)


def test_meter_failing_mid_run_is_marked_and_the_loop_finishes(
    gpus: list[SimulatedGPU], tmp_path: Path
) -> None:
    with Tracker("lost", tmp_path, interval=0.05, intensity=300.0, verbose=0) as tracker:
        for epoch in range(3):
            if epoch == 1:
                gpus[0].fail_after_s = time.monotonic() + 0.1
            with tracker.epoch():
                time.sleep(0.3)
    first, failing, after = tracker.epochs
    gpu0 = [next(d for d in r.devices if d.device == "gpu0") for r in (first, failing, after)]
    assert [d.method for d in gpu0] == ["counter", "failed", "failed"]
    assert gpu0[1].energy_j is not None and gpu0[1].energy_j > 0  # measured until it was lost
    assert gpu0[2].energy_j is None  # not a silent 0
    assert "gpu=counter" in first.methods and "failed" in after.methods
    run = json.loads((tracker.run_dir / "run.json").read_text())
    assert any("gpu0" in w and "stopped working" in w for w in run["warnings"])
    devices = load_run(tracker.run_dir, devices=True)
    lost = devices[(devices["device"] == "gpu0") & (devices["epoch"] == 3)]
    assert math.isnan(lost["energy_j"].iloc[0])


def test_no_nvml_reports_gpu_missing_not_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_no_nvml(monkeypatch)
    with Tracker("nogpu", tmp_path, intensity=300.0, verbose=0) as tracker, tracker.epoch():
        time.sleep(0.05)
    record = tracker.epochs[0]
    assert record.gpu_energy_j is None
    assert "gpu=none" in record.methods
    assert math.isnan(load_run(tracker.run_dir)["gpu_energy_j"].iloc[0])
    run = json.loads((tracker.run_dir / "run.json").read_text())
    assert any(m["device"] == "gpu" and "NVML not found" in m["reason"] for m in run["missing"])


def test_unreadable_rapl_falls_back_to_labelled_estimate_with_the_fix(
    powercap: dict[str, FakeZone], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_no_nvml(monkeypatch)
    for zone in powercap.values():
        zone.make_unreadable()
    honour_file_modes(monkeypatch)
    with (
        Tracker("ro", tmp_path, intensity=300.0, interval=0.05, verbose=0) as tracker,
        tracker.epoch(),
    ):
        busy_until = time.monotonic() + 0.3
        while time.monotonic() < busy_until:  # training keeps a core busy
            pass
    record = tracker.epochs[0]
    assert {d.device: d.method for d in record.devices} == {"cpu": "estimate", "dram": "estimate"}
    assert record.cpu_energy_j is not None and record.cpu_energy_j > 0
    run = json.loads((tracker.run_dir / "run.json").read_text())
    assert run["coverage"]["cpu"] == "estimated"
    assert not [m for m in run["missing"] if m["component"] == "cpu"]  # estimated, not missing
    fixes = [m["fix"] for m in run["estimated"] if m["component"] == "cpu"]
    assert fixes and all("chmod a+r" in fix for fix in fixes)


def test_multiple_wraps_between_reads_are_inferred_and_warned(
    powercap: dict[str, FakeZone], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_no_nvml(monkeypatch)
    zone = powercap["cpu0"]  # its counter range is 80 J
    with Tracker("wrap", tmp_path, interval=60.0, intensity=300.0, verbose=0) as tracker:
        with tracker.epoch():  # 60 J in 0.3 s: cpu0 draws 200 W
            zone.add_energy_j(60.0)
            time.sleep(0.3)
        tracker.epoch_start()
        zone.add_energy_j(200.0)  # 2.5 ranges: the raw counter moved by only 40 J
        time.sleep(1.0)
        record = tracker.epoch_end()
    cpu0 = next(d for d in record.devices if d.device == "cpu0")
    assert cpu0.energy_j == pytest.approx(200.0, rel=0.02)
    assert any("cpu0: the counter wrapped 3 times" in w for w in tracker.summary.warnings)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"pue": 0.5}, "pue"),
        ({"intensity": -3}, "intensity"),
        ({"location": "XX"}, "location"),
        ({"interval": 0}, "interval"),
        ({"components": ["gpu", "tpu"]}, "components"),
    ],
)
def test_invalid_arguments_name_the_argument(kwargs: dict[str, object], argument: str) -> None:
    with pytest.raises(ValueError, match=argument):
        Tracker(**kwargs)  # type: ignore[arg-type]


def test_epoch_end_before_epoch_start_is_a_clear_error(tmp_path: Path) -> None:
    tracker = Tracker("misuse", tmp_path, intensity=1.0, verbose=0)
    with pytest.raises(ValueError, match=r"epoch_end\(\) called without a matching epoch_start"):
        tracker.epoch_end()
    tracker.stop()


def test_callbacks_get_each_record_and_a_raising_one_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tracker")  # verbose=0 logs at INFO
    seen: list[int] = []

    def broken(record: EpochRecord) -> None:
        raise RuntimeError("logger offline")

    tracker = Tracker("cb", tmp_path, intensity=1.0, verbose=0, on_epoch_end=[broken])
    tracker.add_epoch_callback(lambda record: seen.append(record.epoch))
    with tracker:
        for _ in range(3):
            with tracker.epoch():
                pass
    assert seen == [1, 2, 3]
    failures = [r for r in caplog.records if "logger offline" in r.getMessage()]
    assert len(failures) == 1


def test_verbose_prints_one_line_per_epoch_on_stderr_and_quiet_prints_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Tracker("loud", tmp_path, intensity=100.0) as tracker:
        for _ in range(2):
            with tracker.epoch():
                pass
    err = capsys.readouterr().err
    assert err.count("wattprint epoch ") == 2 and "gCO2e" in err and "kWh" in err
    with Tracker("quiet", tmp_path, intensity=100.0, verbose=0) as tracker, tracker.epoch():
        pass
    assert "wattprint epoch" not in capsys.readouterr().err


def test_track_decorator_measures_the_call_as_one_epoch(tmp_path: Path) -> None:
    @track(project="fit", log_dir=tmp_path, intensity=200.0, verbose=0)
    def fit(x: int) -> int:
        time.sleep(0.05)
        return x * 2

    assert fit(21) == 42
    (run_dir,) = (tmp_path / "fit").iterdir()
    epochs = load_run(run_dir)
    assert len(epochs) == 1 and epochs["duration_s"].iloc[0] >= 0.05


def test_log_schema_and_run_json(tmp_path: Path, gpus: list[SimulatedGPU]) -> None:
    with (
        Tracker("schema", tmp_path, location="FR", verbose=0, sample_period=0.1) as tracker,
        tracker.epoch(),
    ):
        time.sleep(1.2)  # the sampler reads the slow gpu0 counter twice
    epochs = load_run(tracker.run_dir)
    assert list(epochs.columns)[:16] == [
        "run_id", "epoch", "start_utc", "end_utc", "duration_s", "gpu_energy_j", "cpu_energy_j",
        "dram_energy_j", "it_energy_j", "pue", "facility_energy_kwh", "intensity_g_per_kwh",
        "co2_g", "gpu_avg_w", "gpu_peak_w", "methods",
    ]  # fmt: skip
    assert epochs["start_utc"].iloc[0].endswith("Z")
    assert epochs["intensity_source"].iloc[0].startswith("FR")
    devices = load_run(tracker.run_dir, devices=True)
    assert set(devices["device"]) >= {"gpu0", "gpu1"}
    samples = load_run(tracker.run_dir, samples=True)
    gpu_samples = samples[samples["device"].str.startswith("gpu")]
    assert set(gpu_samples["device"]) == {"gpu0", "gpu1"} and (gpu_samples["power_w"] > 0).all()
    run = json.loads((tracker.run_dir / "run.json").read_text())
    assert run["status"] == "finished" and run["totals"]["epochs"] == 1
    assert run["intensity"]["year"] and run["intensity"]["basis"]
    assert {h["device"] for h in run["hardware"]} >= {"gpu0", "gpu1"}
