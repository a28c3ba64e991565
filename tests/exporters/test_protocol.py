"""How the tracker drives exporters: what each is told, failures kept inside, bad input refused."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from tests.exporters.runs import POWER_W, boards, make_tracker, run_epochs
from tests.fake_nvml import SimulatedGPU, install_fake_nvml, step_profile
from tracker import CarbonTracker, EpochRecord, RunSummary, Tracker, track
from tracker.exporters import (
    MLflow,
    OpenTelemetry,
    Prometheus,
    RunInfo,
    TensorBoard,
    WandB,
)
from tracker.exporters.base import Exporter
from tracker.integrations._hooks import TrackerHooks


class Recording(Exporter):
    """Keeps what it is told, and on which thread."""

    def __init__(self) -> None:
        self.runs: list[RunInfo] = []
        self.power: list[tuple[str, dict[str, float]]] = []
        self.records: list[EpochRecord] = []
        self.summaries: list[RunSummary] = []

    def start(self, run: RunInfo) -> None:
        self.runs.append(run)

    def interval(self, power_w: Mapping[str, float]) -> None:
        self.power.append((threading.current_thread().name, dict(power_w)))

    def epoch(self, record: EpochRecord) -> None:
        self.records.append(record)

    def stop(self, summary: RunSummary) -> None:
        self.summaries.append(summary)


class Broken(Exporter):
    """Raises in every method."""

    def __init__(self, fail_start: bool = True) -> None:
        self.fail_start = fail_start
        self.calls: list[str] = []

    def start(self, run: RunInfo) -> None:
        self.calls.append("start")
        if self.fail_start:
            raise RuntimeError("sink unreachable")

    def interval(self, power_w: Mapping[str, float]) -> None:
        self.calls.append("interval")
        raise RuntimeError("sink unreachable")

    def epoch(self, record: EpochRecord) -> None:
        self.calls.append("epoch")
        raise RuntimeError("sink unreachable")

    def stop(self, summary: RunSummary) -> None:
        self.calls.append("stop")
        raise RuntimeError("sink unreachable")


def test_an_exporter_is_told_the_run_its_power_live_every_epoch_and_the_totals(
    tmp_path: Path,
) -> None:
    recording = Recording()
    with make_tracker(tmp_path, [recording], location="DE", run_id="told") as tracker:
        run_epochs(tracker, 2)
    (run,) = recording.runs
    assert (run.project, run.run_id, run.run_dir, run.location) == (
        "exported", "told", tracker.run_dir, "DE",
    )  # fmt: skip
    assert run.pue == 1.2 and run.intensity_source == tracker.summary.intensity_source
    assert [d.device for d in run.devices] == list(POWER_W)
    assert recording.records == tracker.epochs
    assert recording.summaries == [tracker.summary]
    threads = {thread for thread, _ in recording.power}
    assert "wattprint-sampler" in threads  # live, from the sampler, not only at edges
    assert recording.power[-1][1] == pytest.approx(POWER_W, rel=1e-6)


def test_device_emissions_add_up_to_the_epochs(tmp_path: Path) -> None:
    with make_tracker(tmp_path, []) as tracker:
        run_epochs(tracker, 2)
    for record in tracker.epochs:
        assert record.co2_g is not None
        assert sum(d.co2_g or 0.0 for d in record.devices) == pytest.approx(record.co2_g)
        assert all(d.co2_g is not None and d.co2_g > 0 for d in record.devices)


def test_a_failing_exporter_is_warned_about_once_and_the_run_is_intact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    broken, failing_later, recording = Broken(), Broken(fail_start=False), Recording()
    exporters = [broken, failing_later, recording]
    with (
        caplog.at_level(logging.INFO, logger="tracker.notices"),
        make_tracker(tmp_path, exporters) as tracker,
    ):
        run_epochs(tracker, 3)
    assert len(tracker.epochs) == 3 and len(recording.records) == 3
    assert recording.summaries and tracker.summary.it_energy_j is not None
    assert broken.calls == ["start"]  # its start failed: left out of the run
    assert failing_later.calls.count("epoch") == 3 and failing_later.calls[-1] == "stop"
    warned = [r.getMessage() for r in caplog.records if "exporter Broken" in r.getMessage()]
    assert len(warned) == 2, warned  # once for each broken exporter
    assert "left out of this run" in warned[0] and "sink unreachable" in warned[0]
    assert len([w for w in tracker.summary.warnings if "exporter Broken" in w]) == 2
    assert len(list((tracker.run_dir / "epochs.csv").read_text().splitlines())) == 4


class Quitting(Exporter):
    """A library that quits: ``sys.exit`` at epochs and stop, KeyboardInterrupt on the sampler."""

    def __init__(self) -> None:
        self.intervals = 0

    def start(self, run: RunInfo) -> None:
        pass

    def interval(self, power_w: Mapping[str, float]) -> None:
        self.intervals += 1
        if threading.current_thread() is not threading.main_thread():
            raise KeyboardInterrupt  # off the main thread: not the user's Ctrl-C

    def epoch(self, record: EpochRecord) -> None:
        sys.exit(3)

    def stop(self, summary: RunSummary) -> None:
        sys.exit(3)


def test_an_exporter_that_quits_is_warned_about_and_neither_ends_the_run_nor_its_sampler(
    tmp_path: Path,
) -> None:
    quitting = Quitting()
    with make_tracker(tmp_path, [quitting]) as tracker:
        run_epochs(tracker, 2)
        intervals = quitting.intervals
        time.sleep(0.5)  # the sampler still runs, and still tells the exporter
        assert quitting.intervals > intervals
    assert len(tracker.epochs) == 2 and tracker.summary.it_energy_j is not None
    (warning,) = [w for w in tracker.summary.warnings if "exporter Quitting" in w]
    assert "KeyboardInterrupt" in warning or "sys.exit(3)" in warning


@pytest.mark.parametrize(
    "exporters",
    [[object()], Recording(), "prometheus", [Prometheus], None],
    ids=["not-an-exporter", "not-a-list", "a-string", "a-class", "none"],
)
def test_exporters_that_are_not_exporter_instances_are_refused_before_any_work(
    tmp_path: Path, exporters: object
) -> None:
    with pytest.raises(ValueError, match=r"exporters must be a sequence of tracker\.exporters"):
        Tracker(log_dir=tmp_path / "runs", exporters=exporters)  # type: ignore[arg-type]
    assert not (tmp_path / "runs").exists()


def test_an_exporter_given_twice_is_refused(tmp_path: Path) -> None:
    twice = Recording()
    with pytest.raises(ValueError, match="once"):
        Tracker(log_dir=tmp_path, exporters=[twice, twice])


@pytest.mark.parametrize(
    ("make", "module", "extra"),
    [
        (lambda: Prometheus(), "prometheus_client", "prometheus"),
        (lambda: OpenTelemetry(), "opentelemetry.metrics", "otel"),
        (lambda: MLflow(), "mlflow", "mlflow"),
        (lambda: WandB(), "wandb", "wandb"),
        (lambda: TensorBoard("tb"), "tensorboard", "tensorboard"),
    ],
)
def test_a_missing_library_fails_when_made_naming_the_extra(
    make: object, module: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # what an absent package looks like
    with pytest.raises(ImportError, match=rf"pip install 'wattprint\[{extra}\]'"):
        make()  # type: ignore[operator]


def test_importing_tracker_and_its_exporters_imports_no_exporter_library() -> None:
    code = (
        "import sys, tracker, tracker.exporters\n"
        "libs = ('prometheus_client', 'opentelemetry', 'mlflow', 'wandb', 'tensorboard')\n"
        "print([m for m in sys.modules if m.split('.')[0] in libs])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_exporters_pass_through_the_decorator_the_callbacks_and_carbontracker(
    tmp_path: Path,
) -> None:
    decorated, hooked, compat = Recording(), Recording(), Recording()

    @track(log_dir=tmp_path / "track", meters=boards(), verbose=0, exporters=[decorated])
    def fit() -> None:
        time.sleep(0.05)

    fit()
    assert len(decorated.records) == 1 and len(decorated.summaries) == 1

    hooks = TrackerHooks(
        "test", None, {"log_dir": tmp_path / "hooks", "meters": boards(), "verbose": 0,
                       "exporters": [hooked]},
    )  # fmt: skip
    hooks.epoch_start()
    hooks.epoch_end()
    hooks.stop()
    assert len(hooked.records) == 1 and len(hooked.summaries) == 1

    tracker = CarbonTracker(
        epochs=1, log_dir=tmp_path / "ct", verbose=0, sim_cpu="sim", sim_cpu_tdp=100,
        components="cpu", exporters=[compat],
    )  # fmt: skip
    tracker.epoch_start()
    tracker.epoch_end()
    assert len(compat.records) == 1 and compat.summaries[0].epochs == 1


def test_bad_exporters_fail_when_a_callback_or_carbontracker_is_made(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exporters"):
        TrackerHooks("test", None, {"log_dir": tmp_path, "exporters": ["mlflow"]})
    with pytest.raises(ValueError, match="exporters"):
        CarbonTracker(epochs=1, log_dir=tmp_path, exporters=[print])  # type: ignore[list-item]


def test_an_exporter_held_by_a_running_tracker_is_left_out_of_a_second_one(
    tmp_path: Path,
) -> None:
    shared = Recording()
    with make_tracker(tmp_path, [shared], run_id="first") as first:
        with make_tracker(tmp_path, [shared], run_id="second") as second:
            run_epochs(second, 1)
        run_epochs(first, 1)
    assert [r.run_id for r in shared.runs] == ["first"]
    assert [r.run_id for r in shared.records] == ["first"]
    (warning,) = second.summary.warnings
    assert "exporting another run" in warning and "left out" in warning
    with make_tracker(tmp_path, [shared], run_id="third") as third:  # free again once stopped
        run_epochs(third, 1)
    assert [r.run_id for r in shared.runs] == ["first", "third"]


def test_live_power_reaches_exporters_from_a_followed_gpu_counter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An NVML energy counter is read by its own follower thread, not the sampler's loop."""
    install_fake_nvml(
        monkeypatch,
        [SimulatedGPU(power_w=step_profile([(0.0, 240.0)]), read_delay_s=0.004)],
    )
    recording = Recording()
    tracker = Tracker(
        "followed", tmp_path / "runs", components=["gpu"], intensity=400.0, verbose=0,
        interval=0.05, sample_period=0.1, exporters=[recording],
    )  # fmt: skip
    with tracker, tracker.epoch():
        deadline = time.monotonic() + 10
        while len(recording.power) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert [d.method for d in recording.runs[0].devices] == ["counter"]
    assert recording.power, "no live power from the followed counter"
    assert all(p == pytest.approx({"gpu0": 240.0}, rel=0.05) for _, p in recording.power[1:])
