"""Work counted through every entry point, and the IT energy per sample and per token it gives.

Energies come from ``tests.ledger.LedgerMeter`` (a counter the test sets), so every per-unit figure
is checked exactly against the hand figure: joules added in the epoch / the work counted in it.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.ledger import LedgerMeter, recorded_run, tracker_on
from tracker import CarbonTracker, load_run, track
from tracker.distributed.job import RankEpoch
from tracker.distributed.merge import merge_runs
from tracker.measure.epochs import WorkTally
from tracker.output.console import epoch_line, summary_line
from tracker.report.text import markdown_statement, read_run, text_report
from tracker.units import J_PER_KWH

G_PER_KWH = 400.0


def rows(run_dir: Path) -> list[dict[str, str]]:
    with (run_dir / "epochs.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def totals(run_dir: Path) -> dict[str, object]:
    document: dict[str, object] = json.loads((run_dir / "run.json").read_text())["totals"]
    return document


def test_per_unit_columns_and_totals_are_exact_against_hand_figures(tmp_path: Path) -> None:
    meter = LedgerMeter()
    tracker = tracker_on(meter, tmp_path, "work")
    with tracker:
        tracker.epoch_start()
        meter.energy_j += 1200.0
        first = tracker.epoch_end(samples=300, tokens=48_000)
        tracker.epoch_start()
        meter.energy_j += 900.0
        for _ in range(4):
            tracker.add_work(samples=50)  # every step ...
        second = tracker.epoch_end(samples=100)  # ... and the rest at the end: 300
        tracker.epoch_start()
        meter.energy_j += 500.0
        third = tracker.epoch_end()  # a validation epoch: nothing counted
    assert (first.samples, first.tokens) == (300, 48_000)
    assert first.it_energy_j_per_sample == 4.0 and first.it_energy_j_per_token == 0.025
    assert (second.samples, second.tokens, second.it_energy_j_per_sample) == (300, None, 3.0)
    assert third.samples is None and third.it_energy_j_per_sample is None
    written = rows(tracker.run_dir)
    columns = ("samples", "tokens", "it_energy_j_per_sample", "it_energy_j_per_token")
    assert [tuple(r[c] for c in columns) for r in written] == [
        ("300", "48000", "4", "0.025"),
        ("300", "", "3", ""),
        ("", "", "", ""),  # empty, never 0
    ]
    # totals: over the epochs that counted each unit; the uncounted epoch's 500 J is left out
    kept = totals(tracker.run_dir)
    assert (kept["samples"], kept["tokens"]) == (600, 48_000)
    assert kept["it_energy_j_per_sample"] == pytest.approx((1200 + 900) / 600, rel=1e-12)
    assert kept["it_energy_j_per_token"] == pytest.approx(1200 / 48_000, rel=1e-12)
    co2_per_sample = (1200 + 900) / J_PER_KWH * G_PER_KWH / 600
    assert kept["co2_g_per_sample"] == pytest.approx(co2_per_sample, rel=1e-9)
    summary = tracker.summary
    assert summary.samples == 600 and summary.it_energy_j_per_sample == pytest.approx(3.5)
    frame = load_run(tracker.run_dir)
    assert list(frame["samples"].fillna(-1)) == [300, 300, -1]


def test_the_console_lines_say_the_work_in_the_unit_that_reads_best(tmp_path: Path) -> None:
    meter = LedgerMeter()
    tracker = tracker_on(meter, tmp_path, "lines")
    with tracker:
        tracker.epoch_start()
        meter.energy_j += 1200.0
        record = tracker.epoch_end(samples=300, tokens=48_000)
        tracker.epoch_start()
        meter.energy_j += 10.0
        bare = tracker.epoch_end()
    assert epoch_line(record).endswith(
        "| 300 samples, 4 J/sample IT; 48,000 tokens, 25 J per 1k tokens IT"
    )
    assert "samples" not in epoch_line(bare)
    assert "300 samples, 4 J/sample IT; 48,000 tokens" in summary_line(tracker.summary)


def test_zero_work_is_counted_and_gives_no_per_unit_figure(tmp_path: Path) -> None:
    run_dir = recorded_run(tmp_path, "zero", [(100.0, 0, 0)])
    assert [(r["samples"], r["tokens"], r["it_energy_j_per_sample"]) for r in rows(run_dir)] == [
        ("0", "0", "")
    ]
    assert totals(run_dir)["samples"] == 0 and totals(run_dir)["it_energy_j_per_sample"] is None


@pytest.mark.parametrize("bad", [-1, 1.5, True, "10", float("nan"), 2**63, np.array([1, 2])])
@pytest.mark.parametrize("argument", ["samples", "tokens"])
def test_a_bad_count_is_a_value_error_naming_it_and_counts_nothing(
    tmp_path: Path, argument: str, bad: object
) -> None:
    meter = LedgerMeter()
    tracker = tracker_on(meter, tmp_path, "bad")
    with tracker:
        tracker.epoch_start()
        with pytest.raises(ValueError, match=f"^{argument} must be None or a whole number"):
            tracker.add_work(**{argument: bad})  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=f"^{argument} must be"):
            tracker.epoch_end(**{argument: bad})  # type: ignore[arg-type]
        record = tracker.epoch_end(samples=np.int64(8), tokens=np.array(80))  # type: ignore[arg-type]
    assert (record.samples, record.tokens) == (8, 80)  # the bad calls counted nothing
    assert not record.partial


def test_work_outside_an_epoch_is_left_out_with_one_warning(tmp_path: Path) -> None:
    meter = LedgerMeter()
    tracker = tracker_on(meter, tmp_path, "outside")
    tracker.add_work(samples=5)  # before the run starts: no error
    with tracker:
        tracker.epoch_start()
        meter.energy_j += 10.0
        tracker.epoch_end(samples=10)
        tracker.add_work(samples=7)  # between epochs
        tracker.epoch_start()
        meter.energy_j += 10.0
        second = tracker.epoch_end()
    tracker.add_work(samples=3)  # after stop
    assert second.samples is None
    assert tracker.summary.samples == 10
    warnings = json.loads((tracker.run_dir / "run.json").read_text())["warnings"]
    assert sum("add_work() called while no epoch was open" in w for w in warnings) == 1


def test_counts_from_many_threads_add_up_exactly(tmp_path: Path) -> None:
    meter = LedgerMeter()
    tracker = tracker_on(meter, tmp_path, "threads")
    with tracker:
        tracker.epoch_start()

        def steps() -> None:
            for _ in range(2000):
                tracker.add_work(samples=1, tokens=3)

        workers = [threading.Thread(target=steps) for _ in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        record = tracker.epoch_end()
    assert (record.samples, record.tokens) == (8000, 24_000)


def test_an_epoch_left_open_at_stop_keeps_its_work(tmp_path: Path) -> None:
    meter = LedgerMeter()
    tracker = tracker_on(meter, tmp_path, "open")
    tracker.start()
    tracker.epoch_start()
    meter.energy_j += 60.0
    tracker.add_work(samples=20)
    tracker.stop()
    (record,) = tracker.epochs
    assert record.partial and record.samples == 20 and record.it_energy_j_per_sample == 3.0


def test_a_forked_child_counts_nothing_and_raises_nothing(tmp_path: Path) -> None:
    meter = LedgerMeter()
    tracker = tracker_on(meter, tmp_path, "fork")
    with tracker:
        tracker.epoch_start()
        tracker.add_work(samples=1)
        pid = os.fork()
        if pid == 0:  # a DataLoader worker, say: every call is a no-op, even a bad count
            try:
                tracker.add_work(samples=1000)
                tracker.add_work(samples=-1)
                inert = tracker.epoch_end(samples=1000)
                os._exit(0 if inert.epoch == 0 and inert.samples is None else 1)
            except BaseException:
                os._exit(2)
        _, status = os.waitpid(pid, 0)
        record = tracker.epoch_end()
    assert os.WEXITSTATUS(status) == 0
    assert record.samples == 1


def test_the_epoch_context_manager_and_track_count_work(tmp_path: Path) -> None:
    meter = LedgerMeter()
    tracker = tracker_on(meter, tmp_path, "with")
    with tracker, tracker.epoch():
        meter.energy_j += 64.0
        tracker.add_work(samples=32)
    assert tracker.epochs[0].it_energy_j_per_sample == 2.0

    decorated_meter = LedgerMeter()

    @track(project="fit", log_dir=tmp_path, meters=[decorated_meter], intensity=1.0, verbose=0)
    def fit() -> None:
        assert fit.last_run is not None
        decorated_meter.energy_j += 90.0
        fit.last_run.add_work(samples=30, tokens=900)

    fit()
    assert fit.last_run is not None
    summary = fit.last_run.summary
    assert (summary.samples, summary.tokens) == (30, 900)
    assert summary.it_energy_j_per_sample == 3.0 and summary.it_energy_j_per_token == 0.1


def test_carbontracker_takes_counts_and_warns_of_bad_ones(tmp_path: Path) -> None:
    tracker = CarbonTracker(
        epochs=2, epochs_before_pred=0, log_dir=tmp_path, intensity=1.0, verbose=0,
        sim_gpu="NVIDIA A100", sim_gpu_watts=300, components="gpu",
    )  # fmt: skip
    tracker.epoch_start()
    tracker.add_work(samples=10)
    tracker.epoch_end(samples=6, tokens=600)
    tracker.epoch_start()
    tracker.epoch_end(samples=-5)  # misuse: warned, the epoch still closes
    written = rows(tracker.run_dir)
    assert [(r["samples"], r["tokens"]) for r in written] == [("16", "600"), ("", "")]
    assert float(written[0]["it_energy_j_per_sample"]) == pytest.approx(
        float(written[0]["it_energy_j"]) / 16
    )
    warnings = json.loads((tracker.run_dir / "run.json").read_text())["warnings"]
    assert any("samples must be None or a whole number" in w for w in warnings)


def test_merged_runs_carry_the_work_of_every_process(tmp_path: Path) -> None:
    first = recorded_run(tmp_path / "node0", "job", [(1000.0, 100, None), (1000.0, 100, None)])
    second = recorded_run(tmp_path / "node1", "job", [(500.0, 150, None), (700.0, 150, None)])
    summary = merge_runs([first, second], tmp_path / "merged")
    written = rows(tmp_path / "merged")
    assert [(r["samples"], r["it_energy_j_per_sample"]) for r in written] == [
        ("250", "6"),
        ("250", "6.8"),
    ]
    assert summary.samples == 500
    assert summary.it_energy_j_per_sample == pytest.approx(3200 / 500)
    assert totals(tmp_path / "merged")["samples"] == 500


def test_a_process_posts_its_work_to_rank_0() -> None:
    part = RankEpoch(
        rank=1,
        host="h",
        epoch=1,
        start_utc="",
        end_utc="",
        duration_s=1.0,
        pue=1.0,
        intensity_g_per_kwh=1.0,
        co2_g=None,
        partial=False,
        devices=(),
        samples=12,
        tokens=345,
    )
    assert RankEpoch.from_json(json.loads(json.dumps(part.to_json()))) == part
    older = {k: v for k, v in part.to_json().items() if k not in ("samples", "tokens")}
    assert RankEpoch.from_json(older).samples is None  # a rank of an older wattprint


def test_the_report_has_a_work_section(tmp_path: Path) -> None:
    counted = recorded_run(tmp_path, "counted", [(1200.0, 300, 48_000), (900.0, 300, None)])
    report = text_report(read_run(counted))
    work = report.split("\nWork\n")[1].split("\n\n")[0]
    assert "3.5 J/sample" in work and "25 J per 1k tokens" in work
    assert "gCO2e per 1M samples" in work
    assert "| Per unit of work | 3.5 J/sample IT, " in markdown_statement(read_run(counted))
    bare = recorded_run(tmp_path, "bare", [(100.0, None, None)])
    assert "Work: not counted" in text_report(read_run(bare))
    assert "Per unit of work" not in markdown_statement(read_run(bare))


@given(st.lists(st.tuples(st.floats(0, 1e9), st.integers(0, 10**12)), max_size=20))
def test_a_run_per_unit_figure_is_its_counted_energy_over_its_counted_work(
    epochs: list[tuple[float, int]],
) -> None:
    tally, backwards = WorkTally(), WorkTally()
    for energy, count in epochs:
        tally.add(count, energy, energy * 1e-4)
    for energy, count in reversed(epochs):
        backwards.add(count, energy, energy * 1e-4)
    counted = sum(c for _, c in epochs)
    assert tally.count == (counted if epochs else None)
    if counted:
        assert tally.it_energy_j_per_unit == pytest.approx(sum(e for e, _ in epochs) / counted)
        assert backwards.it_energy_j_per_unit == pytest.approx(tally.it_energy_j_per_unit)
    else:
        assert tally.it_energy_j_per_unit is None  # no division by zero work, never a silent 0


def test_a_signal_that_splits_an_epoch_splits_its_work_too(tmp_path: Path) -> None:
    caught: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda number, frame: caught.append(number))
    try:
        meter = LedgerMeter()
        tracker = tracker_on(meter, tmp_path, "split")
        with tracker:
            tracker.epoch_start()
            meter.energy_j += 40.0
            tracker.add_work(samples=10)
            os.kill(os.getpid(), signal.SIGTERM)  # the program's handler returns: it lives on
            meter.energy_j += 90.0
            tracker.add_work(samples=30)
            tracker.epoch_end()
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert caught == [signal.SIGTERM]
    first, second = tracker.epochs
    assert (first.epoch, second.epoch) == (1, 1) and first.partial and second.partial
    assert (first.samples, first.it_energy_j_per_sample) == (10, 4.0)
    assert (second.samples, second.it_energy_j_per_sample) == (30, 3.0)
    assert tracker.summary.it_energy_j_per_sample == pytest.approx(130 / 40)
