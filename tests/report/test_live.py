"""``tracker.report.live``: following a run's files as they are written, and the view of it."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from tests.ledger import LedgerMeter, tracker_on
from tracker.notices import Notices
from tracker.output.logs import EPOCH_COLUMNS, LogWriter
from tracker.report import live
from tracker.report.live import RunFollower, _Tail, follow, render, run_dir_of
from tracker.units import J_PER_KWH, utc_label

STARTED = 1_767_268_800.0  # 2026-01-01T12:00:00Z


def write_run_json(run_dir: Path, **fields: Any) -> None:
    document = {
        "run_id": run_dir.name,
        "status": "running",
        "started_utc": utc_label(STARTED),
        "stopped_utc": None,
        "pue": 1.5,
        "totals": {"intensity_g_per_kwh": 500.0},
        "prediction": None,
        "warnings": [],
    } | fields
    (run_dir / "run.json").write_text(json.dumps(document))


def epoch_row(epoch: int, end_s: float, kwh: float, co2: float) -> dict[str, object]:
    return {
        "run_id": "r",
        "epoch": epoch,
        "start_utc": utc_label(STARTED),
        "end_utc": utc_label(STARTED + end_s),
        "duration_s": end_s,
        "facility_energy_kwh": kwh,
        "co2_g": co2,
        "intensity_g_per_kwh": co2 / kwh,
        "partial": "false",
    }


def append_epoch(run_dir: Path, row: dict[str, object]) -> None:
    with open(run_dir / "epochs.csv", "a", newline="") as out:
        csv.writer(out).writerow([row.get(column, "") for column in EPOCH_COLUMNS])


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run being written: LogWriter's CSVs (headers only) and a run.json saying running."""
    run_dir = tmp_path / "p" / "r"
    LogWriter(run_dir, Notices(quiet=True)).close()
    return run_dir


def test_energy_so_far_is_the_finished_epochs_plus_the_open_one_from_the_timeline(
    run_dir: Path,
) -> None:
    follower = RunFollower(run_dir)
    waiting = follower.poll()
    assert waiting.status is None and not waiting.ended and waiting.facility_energy_kwh is None
    write_run_json(run_dir)
    append_epoch(run_dir, epoch_row(1, 10.0, 0.001, 0.5))
    with open(run_dir / "samples.csv", "a") as out:  # gpu0: 100 W to 10 s, then 200 W
        for elapsed_s, watts in ((5, 100), (10, 100), (12, 200), (14, 200)):
            out.write(f"{utc_label(STARTED + elapsed_s)},{elapsed_s},gpu0,{watts}\n")
    run = follower.poll()
    open_kwh = 2 * 200 * 2.0 * 1.5 / J_PER_KWH  # two 2-s points after the edge, times PUE
    assert run.facility_energy_kwh == pytest.approx(0.001 + open_kwh)
    assert run.co2_g == pytest.approx(0.5 + open_kwh * 500)  # the last epoch's intensity
    assert run.power_w == {"gpu0": 200.0} and len(run.epochs) == 1 and not run.ended

    append_epoch(run_dir, epoch_row(2, 14.0, 0.0003, 0.15))
    run = follower.poll()
    assert run.facility_energy_kwh == pytest.approx(0.0013)  # the open part is now epoch 2
    write_run_json(
        run_dir,
        status="finished",
        stopped_utc=utc_label(STARTED + 14),
        totals={"facility_energy_kwh": 0.0013, "co2_g": 0.65},
    )
    run = follower.poll()
    assert run.ended and run.elapsed_s == pytest.approx(14.0)
    assert (run.facility_energy_kwh, run.co2_g) == (0.0013, 0.65)
    assert run.end_line() == "run r: finished, 2 epochs, 14.0 s, 0.0013 kWh, 0.65 gCO2e"


def test_a_poll_reads_a_long_file_to_its_end_a_piece_at_a_time(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "MAX_READ_BYTES", 100)  # a few rows per read
    for epoch in range(1, 201):
        append_epoch(run_dir, epoch_row(epoch, 10.0 * epoch, 0.001, 0.5))
    run = RunFollower(run_dir).poll()
    assert [e.epoch for e in run.epochs] == list(range(1, 201))
    assert run.facility_energy_kwh == pytest.approx(0.2)


def test_a_file_replaced_or_cut_is_read_again_from_its_start(tmp_path: Path) -> None:
    path = tmp_path / "epochs.csv"
    tail = _Tail(path)
    assert tail.read() == ([], False)  # not written yet
    path.write_text("epoch,co2_g\n1,0.5\n2,0.")
    assert tail.read() == ([{"epoch": "1", "co2_g": "0.5"}], False)  # the half line waits
    with open(path, "a") as out:
        out.write("7\n")
    assert tail.read() == ([{"epoch": "2", "co2_g": "0.7"}], False)
    replacement = tmp_path / "new.csv"
    replacement.write_text("epoch,co2_g\n1,9\n")
    os.replace(replacement, path)  # rotated: a new file under the old name
    assert tail.read() == ([{"epoch": "1", "co2_g": "9"}], True)
    path.write_text("epoch,co2_g\n")  # truncated in place
    assert tail.read() == ([], True)


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(st.integers(0, 10**9), max_size=30), cuts=st.lists(st.integers(0, 400)))
def test_rows_read_in_any_pieces_are_the_rows_written(
    tmp_path_factory: pytest.TempPathFactory, rows: list[int], cuts: list[int]
) -> None:
    path = tmp_path_factory.mktemp("tail") / "samples.csv"
    text = "device,power_w\n" + "".join(f"gpu0,{value}\n" for value in rows)
    tail, seen, written = _Tail(path), [], 0
    for cut in [*sorted(c for c in cuts if c < len(text)), len(text)]:
        with open(path, "a") as out:
            out.write(text[written:cut])
        written = max(written, cut)
        found, restarted = tail.read()
        assert not restarted
        seen += [int(row["power_w"]) for row in found]
    assert seen == rows


def test_the_view_shows_power_energy_epoch_and_the_prediction_with_its_range(
    run_dir: Path,
) -> None:
    prediction = {
        "epochs": 10,
        "based_on_epochs": 2,
        "duration_s": 100.0,
        "duration_low_s": 90.0,
        "duration_high_s": 120.0,
        "energy_j": 5000.0,  # a name from before IT and facility energy were named apart
        "it_energy_low_j": 4000.0,
        "it_energy_high_j": 6000.0,
        "facility_energy_kwh": 0.002,
        "facility_energy_low_kwh": 0.0015,
        "facility_energy_high_kwh": 0.0025,
        "co2_g": 1.0,
        "co2_low_g": 0.8,
        "co2_high_g": 1.2,
        "check": None,
    }
    write_run_json(run_dir, prediction=prediction)
    append_epoch(run_dir, epoch_row(1, 10.0, 0.0002, 0.1))
    with open(run_dir / "samples.csv", "a") as out:
        out.write(
            f"{utc_label(STARTED + 11)},11,gpu0,250.5\n{utc_label(STARTED + 11)},11,cpu0,40\n"
        )
    screen = io.StringIO()
    console = Console(file=screen, force_terminal=True, width=120, color_system="standard")
    console.print(render(RunFollower(run_dir).poll()))
    shown = screen.getvalue()
    assert "\x1b[" in shown  # drawn for a terminal
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown)
    for text in (
        "run r: running",
        "2 in progress (1 finished)",
        "power gpu0",
        "250.5 W",
        "power total",
        "290.5 W",
        "energy so far",
        "(PUE 1.5)",
        "0.002 kWh (0.0015-0.0025)",
        "1 gCO2e (0.8-1.2)",
        "for 10 epochs, from 2",
        "epoch 1: 10.00 s, 0.0002 kWh, 0.1 gCO2e",
    ):
        assert text in plain, text


def test_follow_draws_in_place_on_a_terminal_and_writes_lines_elsewhere(run_dir: Path) -> None:
    append_epoch(run_dir, epoch_row(1, 10.0, 0.0002, 0.1))
    write_run_json(run_dir, status="failed", totals={"facility_energy_kwh": 0.0002, "co2_g": 0.1})
    screen = io.StringIO()
    run = follow(run_dir, Console(file=screen, force_terminal=True, width=100), period_s=0.01)
    assert run.ended and run.status == "failed" and "failed" in screen.getvalue()
    assert "\x1b[?25l" in screen.getvalue()  # rich.live hid the cursor while drawing
    lines = io.StringIO()
    follow(run_dir, Console(file=lines, force_terminal=False, width=20), period_s=0.01)
    assert lines.getvalue().splitlines() == [
        "epoch 1: 10.00 s, 0.0002 kWh, 0.1 gCO2e",
        "run r: failed, 1 epochs, n/a, 0.0002 kWh, 0.1 gCO2e",
    ]  # not wrapped at the console's width


def test_a_path_that_is_not_a_run_is_refused_naming_it(tmp_path: Path, run_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere: no such run directory"):
        run_dir_of(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty is not a wattprint run directory"):
        run_dir_of(tmp_path / "empty")
    assert run_dir_of(run_dir) == run_dir  # its CSVs are there, run.json not yet
    write_run_json(run_dir)
    assert run_dir_of(tmp_path / "p") == run_dir  # a project: its newest run
    for text in ("[1, 2]", "{}"):
        (run_dir / "run.json").write_text(text)
        with pytest.raises(ValueError, match=r"run\.json is not a wattprint run\.json"):
            run_dir_of(run_dir)
    with pytest.raises(ValueError, match="RUN_DIR must be a non-empty path"):
        run_dir_of("")


def test_a_run_whose_directory_is_deleted_while_followed_has_ended_saying_so(
    run_dir: Path,
) -> None:
    write_run_json(run_dir)
    append_epoch(run_dir, epoch_row(1, 10.0, 0.001, 0.5))
    follower = RunFollower(run_dir)
    assert not follower.poll().ended
    for path in run_dir.iterdir():
        path.unlink()
    run_dir.rmdir()  # deleted by hand while running: no file will come back
    run = follower.poll()
    assert run.ended and len(run.epochs) == 1
    assert run.end_line().startswith("run r: run directory deleted, 1 epochs")


def test_a_run_json_of_the_wrong_shape_mid_run_keeps_the_last_good_reading(
    run_dir: Path,
) -> None:
    write_run_json(run_dir, warnings=["one"])
    follower = RunFollower(run_dir)
    assert follower.poll().warnings == 1
    write_run_json(run_dir, warnings=5, status="finished")  # edited by hand while followed
    run = follower.poll()
    assert run.warnings == 1 and not run.ended


def test_gco2e_so_far_shows_during_the_first_epoch_at_a_constant_intensity(
    tmp_path: Path,
) -> None:
    meter = LedgerMeter()
    tracker = tracker_on(meter, tmp_path, "live", interval=0.05, sample_period=0.05)
    with tracker:
        tracker.epoch_start()  # ``wattprint run``'s only epoch: the whole command
        follower = RunFollower(tracker.run_dir)
        deadline = time.monotonic() + 30
        while (run := follower.poll()).facility_energy_kwh is None:
            assert time.monotonic() < deadline, "no timeline written"
            meter.energy_j += 5.0
            time.sleep(0.05)
        assert run.co2_g == pytest.approx(run.facility_energy_kwh * 400.0)
        tracker.epoch_end()
