"""One honest number per epoch, as a new user on a machine without GPU or RAPL meets them.

Each test pins a defect users found: negative epochs, silent zeros, silent partial coverage,
run.json rewrites that grew with the run, a reused run id, names escaping the log directory,
hooks racing across threads, a timeline lost to kill -9, no floor on the interval, noise at
``verbose=0``, a run that lived on after Ctrl-C logged as interrupted, and ``@track`` hiding its
run.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from backends.base import Meter, MeterInfo, Method, Reading
from tests.fake_nvml import SimulatedGPU, install_fake_nvml, install_no_nvml, step_profile
from tests.fake_powercap import build_powercap, honour_file_modes
from tests.faults.processes import Child
from tests.faults.simulated import WAIT_S, ConstantPowerMeter, StallingMeter
from tests.measure.test_invariants import T0_S, simulated
from tracker import CarbonTracker, Tracker, load_run, track
from tracker.carbon.intensity import Constant
from tracker.carbon.pricing import Carbon
from tracker.cli.main import main as wattprint
from tracker.measure.epochs import build_record
from tracker.measure.sampler import Sampler
from tracker.notices import Notices


@pytest.fixture
def bare_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The commonest machine: no NVIDIA driver, no RAPL."""
    install_no_nvml(monkeypatch)
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(tmp_path / "no-powercap"))


def test_an_edge_completed_too_high_is_never_taken_back_from_its_epoch(tmp_path: Path) -> None:
    """A slow counter's edge extrapolates its last power; a lower read after it must not make the
    next epoch negative (seen: -13 J, and -26.4 W reaching Keras' History)."""
    gpu = SimulatedGPU(power_w=step_profile([(T0_S, 100.0), (T0_S + 0.1, 0.0)]))
    with simulated(tmp_path / "none") as (patch, clock):
        install_fake_nvml(patch, [gpu])
        from backends.gpu.nvidia import find_gpus

        meters = find_gpus(None).meters
        notices = Notices(quiet=True)
        carbon = Carbon(Constant(300.0), 1.0, notices)
        sampler = Sampler(meters, carbon.co2_g, notices, 0.5, 1.0, lambda points: None)
        sampler.poll()  # t0: 100 W
        cuts = [sampler.snapshot()]
        for at_s, tick in ((0.4, False), (0.5, True), (0.6, False)):
            clock.now_s = T0_S + at_s
            if tick:
                sampler.poll()  # the counter shows only 10 J were spent
            cuts.append(sampler.snapshot())
        records = [
            build_record(
                run_id="r", epoch=k, meters=meters, start=a, end=b, carbon=carbon,
                components=("gpu",), host="h", rank=0, partial=False,
            )
            for k, (a, b) in enumerate(itertools.pairwise(cuts), 1)
        ]  # fmt: skip
        sampler.stop()  # closes the meters, so NVML is shut down again
    energies = [r.gpu_energy_j for r in records]
    assert all(e is not None and e >= 0 for e in energies), energies
    assert all(r.co2_g is not None and r.co2_g >= 0 for r in records)
    assert sum(e or 0.0 for e in energies) == pytest.approx(20.0)  # what the edges handed out


def test_a_component_with_no_meter_is_empty_everywhere_never_zero(
    bare_machine: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Tracker("gpu-only", tmp_path, components=["gpu"], intensity=300.0, verbose=1) as t:
        with t.epoch():
            time.sleep(0.06)
        record = t.epochs[0]
    assert record.gpu_energy_j is None and record.it_energy_j is None
    assert record.facility_energy_kwh is None and record.co2_g is None
    summary = t.summary
    assert summary.it_energy_j is None and summary.facility_energy_kwh is None
    assert summary.co2_g is None
    row = load_run(t.run_dir).iloc[0]
    assert all(row[c] != row[c] for c in ("it_energy_j", "facility_energy_kwh", "co2_g"))  # NaN
    totals = json.loads((t.run_dir / "run.json").read_text())["totals"]
    assert totals["it_energy_j"] is None and totals["co2_g"] is None
    err = capsys.readouterr().err
    assert "n/a kWh, n/a gCO2e" in err and " 0 kWh" not in err
    assert wattprint(["report", str(t.run_dir)]) == 0
    assert " 0 g CO2e" not in capsys.readouterr().out


def test_the_carbontracker_drop_in_reports_no_emissions_rather_than_zero(
    bare_machine: None, tmp_path: Path
) -> None:
    tracker = CarbonTracker(epochs=1, components="gpu", log_dir=tmp_path, verbose=0)
    tracker.epoch_start()
    time.sleep(0.06)
    tracker.epoch_end()
    tracker.stop()
    assert tracker.final_emissions_reported is None


def test_a_package_that_cannot_be_read_is_said_in_methods_and_run_json(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_no_nvml(monkeypatch)
    root = tmp_path / "powercap"
    zones = build_powercap(root, sockets=2, dram=False)
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(root))
    honour_file_modes(monkeypatch)
    zones["cpu1"].make_unreadable()
    with Tracker("half", tmp_path, components=["cpu"], intensity=1.0, verbose=0) as t, t.epoch():
        zones["cpu0"].add_energy_j(5.0)
    record = t.epochs[0]
    assert record.methods == "cpu=rapl+missing"
    assert record.cpu_energy_j == pytest.approx(5.0)
    run = json.loads((t.run_dir / "run.json").read_text())
    assert run["coverage"]["cpu"] == "partial"
    assert [m["device"] for m in run["missing"]] == ["cpu1"]
    assert load_run(t.run_dir)["methods"][0] == "cpu=rapl+missing"


def test_run_json_rewrites_queued_while_the_sampler_is_busy_coalesce(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After 200 epochs closed while the sampler thread was held, one rewrite, not 200."""
    stall = StallingMeter()
    tracker = Tracker(
        "coalesce", tmp_path, meters=[ConstantPowerMeter(), stall], intensity=1.0,
        interval=0.05, verbose=0,
    )  # fmt: skip
    writes: list[int] = []
    with tracker:
        assert tracker._log is not None
        write = tracker._log.writer.write_run_json

        def counted(document: dict[str, Any]) -> None:
            writes.append(document["totals"]["epochs"])
            write(document)

        monkeypatch.setattr(tracker._log.writer, "write_run_json", counted)
        stall.stall()
        assert stall.stalled.wait(WAIT_S)
        for _ in range(200):
            with tracker.epoch():
                pass
        stall.release()
        deadline = time.monotonic() + WAIT_S
        while 200 not in writes and time.monotonic() < deadline:
            time.sleep(0.01)
    assert writes.count(200) >= 1 and len([w for w in writes if w < 200]) <= 1


def test_ten_thousand_epochs_are_all_kept_and_the_totals_stay_exact(tmp_path: Path) -> None:
    tracker = Tracker(
        "many", tmp_path, meters=[ConstantPowerMeter(power_w=100.0)], components=["gpu"],
        intensity=300.0, verbose=0,
    )  # fmt: skip
    with tracker:
        for _ in range(10_000):
            tracker.epoch_start()
            tracker.epoch_end()
    epochs = load_run(tracker.run_dir)
    assert list(epochs["epoch"]) == list(range(1, 10_001))
    summary = tracker.summary
    assert summary.epochs == 10_000
    assert summary.it_energy_j == pytest.approx(epochs["it_energy_j"].sum(), rel=1e-9)
    totals = json.loads((tracker.run_dir / "run.json").read_text())["totals"]
    assert totals["epochs"] == 10_000


def test_a_run_id_in_use_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    first = Tracker("p", tmp_path, run_id="exp1", meters=[ConstantPowerMeter()], verbose=0)
    with first, first.epoch():
        pass
    before = (first.run_dir / "epochs.csv").read_text()
    with pytest.raises(ValueError, match=r"run_id: .*exp1 already holds a run"):
        Tracker("p", tmp_path, run_id="exp1", meters=[ConstantPowerMeter()], verbose=0)
    assert (first.run_dir / "epochs.csv").read_text() == before
    assert load_run(first.run_dir)["it_energy_j"].dtype.kind == "f"  # numbers, not strings


@pytest.mark.parametrize(
    ("argument", "value"),
    [("project", ".."), ("project", "."), ("run_id", "../x"), ("run_id", "a\nb"),
     ("project", "x/y"), ("run_id", " lead"), ("project", "tab\there")],
)  # fmt: skip
def test_a_name_that_would_leave_its_directory_level_is_refused(
    argument: str, value: str, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=f"{argument} must be a name for one directory level"):
        if argument == "project":
            Tracker(value, tmp_path, meters=[ConstantPowerMeter()])
        else:
            Tracker("p", tmp_path, run_id=value, meters=[ConstantPowerMeter()])
    assert list(tmp_path.iterdir()) == []


def test_hooks_from_several_threads_close_each_epoch_once(tmp_path: Path) -> None:
    tracker = Tracker("threads", tmp_path, meters=[ConstantPowerMeter()], verbose=0)
    outcomes: list[str] = []
    with tracker:
        for _ in range(20):
            tracker.epoch_start()
            gate = threading.Barrier(3)

            def close() -> None:
                gate.wait(WAIT_S)  # noqa: B023 - each round's barrier, used within the round
                try:
                    tracker.epoch_end()
                    outcomes.append("closed")
                except ValueError as error:
                    outcomes.append("refused" if "without a matching" in str(error) else "other")

            threads = [threading.Thread(target=close) for _ in range(3)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(WAIT_S)
    assert outcomes.count("closed") == 20 and outcomes.count("refused") == 40
    epochs = load_run(tracker.run_dir)
    assert list(epochs["epoch"]) == list(range(1, 21)) == [r.epoch for r in tracker.epochs]


def test_kill_9_keeps_the_power_timeline_up_to_the_last_edge(tmp_path: Path) -> None:
    child = Child.training(tmp_path / "logs", "--epoch-s", "1.0")
    child.wait_for("epoch 3 started")
    child.send(signal.SIGKILL)
    child.finish()
    samples = load_run(tmp_path / "logs" / "run0" / "r", samples=True)
    assert len(samples) >= 2 and set(samples["device"]) == {"gpu0"}
    assert samples["power_w"].to_list() == pytest.approx([200.0] * len(samples))


def test_the_last_partial_window_of_the_timeline_is_written_at_stop(tmp_path: Path) -> None:
    tracker = Tracker("tail", tmp_path, meters=[ConstantPowerMeter()], sample_period=5.0, verbose=0)
    with tracker, tracker.epoch():
        time.sleep(0.3)
    samples = load_run(tracker.run_dir, samples=True)
    assert len(samples) == 1 and samples["power_w"][0] == pytest.approx(200.0)


@pytest.mark.parametrize("interval", [1e-9, 0.01, 0.049])
def test_an_interval_below_the_floor_is_refused_with_the_floor(
    interval: float, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"interval must be at least 0\.05 seconds"):
        Tracker("p", tmp_path, interval=interval, meters=[ConstantPowerMeter()])


def test_verbose_0_prints_nothing_and_verbose_1_one_short_line_per_component(
    bare_machine: None, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with Tracker("quiet", tmp_path, intensity=300.0, verbose=0) as t, t.epoch():
        pass
    assert capfd.readouterr().err == ""
    with Tracker("loud", tmp_path, intensity=300.0, verbose=1) as t, t.epoch():
        pass
    lines = capfd.readouterr().err.splitlines()
    notes = [line for line in lines if " estimated" in line or " not measured" in line]
    assert [line.split()[1] for line in notes] == ["gpu", "cpu", "dram"]
    assert all(len(line) < 200 and "Fix" not in line for line in notes), notes
    run = json.loads((t.run_dir / "run.json").read_text())
    assert run["coverage"] == {"gpu": "not measured", "cpu": "estimated", "dram": "estimated"}
    assert [m["component"] for m in run["missing"]] == ["gpu"]
    assert {m["component"] for m in run["estimated"]} == {"cpu", "dram"}
    assert all(m["fix"] for m in run["missing"] + run["estimated"])


def test_a_caught_keyboardinterrupt_splits_the_epoch_and_the_run_ends_finished(
    tmp_path: Path,
) -> None:
    tracker = Tracker("ctrl-c", tmp_path, meters=[ConstantPowerMeter()], verbose=0)
    with tracker:
        for epoch in range(3):
            tracker.epoch_start()
            if epoch == 1:
                try:
                    os.kill(os.getpid(), signal.SIGINT)
                    time.sleep(WAIT_S)  # the KeyboardInterrupt lands here
                except KeyboardInterrupt:
                    pass
            time.sleep(0.05)
            tracker.epoch_end()
    assert [(r.epoch, r.partial) for r in tracker.epochs] == [
        (1, False), (2, True), (2, True), (3, False),
    ]  # fmt: skip
    assert json.loads((tracker.run_dir / "run.json").read_text())["status"] == "finished"


def test_track_exposes_the_run_it_measured(tmp_path: Path) -> None:
    @track(project="fit", log_dir=tmp_path, meters=[ConstantPowerMeter()], verbose=0)
    def fit(steps: int) -> int:
        time.sleep(0.05)
        return steps

    assert fit.last_run is None
    assert fit(3) == 3
    run = fit.last_run
    assert run is not None and run.summary.epochs == 1
    assert (run.run_dir / "epochs.csv").is_file()
    assert run.summary.it_energy_j is not None and run.summary.it_energy_j > 0


def test_load_run_and_report_read_runs_written_under_the_old_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tracker = Tracker("old", tmp_path, meters=[ConstantPowerMeter()], intensity=100.0, verbose=0)
    with tracker, tracker.epoch():
        time.sleep(0.05)
    epochs_csv, run_json = tracker.run_dir / "epochs.csv", tracker.run_dir / "run.json"
    header, *rows = epochs_csv.read_text().splitlines()
    old = header.replace("it_energy_j", "energy_j").replace("facility_energy_kwh", "energy_kwh")
    epochs_csv.write_text("\n".join([old, *rows]) + "\n")
    document = json.loads(run_json.read_text())
    totals = document["totals"]
    totals["energy_j"], totals["energy_kwh"] = (
        totals.pop("it_energy_j"),
        totals.pop("facility_energy_kwh"),
    )
    run_json.write_text(json.dumps(document))
    frame = load_run(tracker.run_dir)
    assert frame["it_energy_j"][0] == pytest.approx(tracker.epochs[0].it_energy_j)
    assert wattprint(["report", str(tracker.run_dir)]) == 0
    out = capsys.readouterr().out
    it_energy_j = tracker.epochs[0].it_energy_j
    assert it_energy_j is not None and f"{it_energy_j / 3600:.4g}" in out


def test_a_child_forked_while_another_thread_is_in_a_hook_does_not_hang(tmp_path: Path) -> None:
    """The hooks' lock may be copied held into a forked child; the child's hooks never take it."""
    entered, release = threading.Event(), threading.Event()

    def slow(record: object) -> None:
        entered.set()
        release.wait(WAIT_S)

    tracker = Tracker("fork", tmp_path, meters=[ConstantPowerMeter()], verbose=0)
    tracker.add_epoch_callback(slow)
    with tracker:
        tracker.epoch_start()
        closer = threading.Thread(target=tracker.epoch_end)
        closer.start()
        assert entered.wait(WAIT_S)
        pid = os.fork()
        if pid == 0:  # the child: every hook returns at once, none raises
            try:
                tracker.epoch_start()
                tracker.epoch_end()
                tracker.stop()
            finally:
                os._exit(0)
        release.set()
        closer.join(WAIT_S)
        deadline = time.monotonic() + WAIT_S
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        if done[0] == 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung in a tracker hook")
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert [r.epoch for r in tracker.epochs] == [1]


def test_a_counter_that_wraps_faster_than_the_interval_is_read_often_enough(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A 30 J range at up to 100 W wraps every 0.3 s: read every 0.5 s, the wrap count would
    lock onto a wrong figure (old: 60 % low); read every 0.1 s, every joule is counted."""
    install_no_nvml(monkeypatch)
    root = tmp_path / "powercap"
    zone = build_powercap(root, sockets=1, dram=False, max_energy_range_uj=30_000_000)["cpu0"]
    zone.add_constraints(100_000_000)
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(root))
    added_j: list[float] = [0.0]
    stop = threading.Event()

    def hardware() -> None:  # the package draws 100 W, in 5 ms steps
        while not stop.wait(0.005):
            zone.add_energy_j(0.5)
            added_j[0] += 0.5

    tracker = Tracker("wrap", tmp_path, components=["cpu"], interval=0.5, intensity=1, verbose=0)
    drawing = threading.Thread(target=hardware)
    drawing.start()
    try:
        with tracker:
            tracker.epoch_start()
            start_j = added_j[0]
            time.sleep(1.0)
            end_j = added_j[0]
            record = tracker.epoch_end()
    finally:
        stop.set()
        drawing.join(WAIT_S)
    assert record.cpu_energy_j == pytest.approx(end_j - start_j, abs=1.0)
    assert any("can wrap every 0.3 s" in w for w in tracker.summary.warnings)


class HangingMeter(Meter):
    """A meter whose driver hangs, on every thread, while ``hang`` is set."""

    def __init__(self, fast: bool) -> None:
        self.fast = fast
        method: Method = "power" if fast else "counter"
        self.info = MeterInfo("gpu0", "gpu", "hanging board", method, host_level=False)
        self.hang, self.release, self.stuck = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )
        self._origin_s = time.monotonic()

    def read(self) -> Reading:
        if self.hang.is_set():
            self.stuck.set()
            self.release.wait(WAIT_S)
        now_s = time.monotonic()
        if self.fast:
            return Reading(now_s, power_w=100.0)
        return Reading(now_s, energy_j=100.0 * (now_s - self._origin_s))


@pytest.mark.parametrize("fast", [True, False], ids=["power-meter", "slow-counter"])
def test_a_driver_that_hangs_never_holds_up_the_training_thread(fast: bool, tmp_path: Path) -> None:
    meter = HangingMeter(fast)
    tracker = Tracker("hang", tmp_path, meters=[meter], interval=0.05, verbose=0)
    with tracker:
        meter.hang.set()
        assert meter.stuck.wait(WAIT_S)  # the sampler thread is stuck in the driver
        time.sleep(1.2)  # long enough for the counter to count as stale
        done = threading.Event()

        def train() -> None:
            for _ in range(3):
                tracker.epoch_start()
                tracker.epoch_end()
            done.set()

        loop = threading.Thread(target=train)
        loop.start()
        finished = done.wait(WAIT_S / 3)
        meter.release.set()
        loop.join(WAIT_S)
    assert finished, "an epoch hook waited on the hung driver"
    assert all(r.gpu_energy_j is not None and r.gpu_energy_j >= 0 for r in tracker.epochs)
