"""``wattprint compare`` on runs recorded by a real Tracker with known energies and work."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.cli.shell import wattprint
from tests.ledger import Epoch, LedgerMeter, recorded_run, tracker_on
from tracker.cli.main import main
from tracker.distributed.merge import merge_runs
from tracker.report.compare import compare_runs

BASELINE: list[Epoch] = [(1000.0, 100, 4000), (1010.0, 100, 4000), (990.0, 100, 4000)]
SLOWER: list[Epoch] = [(1060.0, 100, 4000), (1070.0, 100, 4000), (1050.0, 100, 4000)]  # +6%
NOISY: list[Epoch] = [(900.0, 100, None), (1200.0, 100, None), (1080.0, 100, None)]  # +6%, noisy


@pytest.fixture
def runs(tmp_path: Path) -> dict[str, Path]:
    """Project directories of a baseline, a run 6% costlier per sample, and a noisy one."""
    recorded_run(tmp_path, "baseline", BASELINE)
    recorded_run(tmp_path, "candidate", SLOWER)
    recorded_run(tmp_path, "noisy", NOISY)
    return {name: tmp_path / name for name in ("baseline", "candidate", "noisy")}


def run_cli(*args: str | Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["compare", *(str(a) for a in args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_fail_above_gates_on_the_change_per_sample_both_ways(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base, candidate = runs["baseline"], runs["candidate"]
    code, out, _ = run_cli(base, candidate, "--per", "sample", "--fail-above", "5", capsys=capsys)
    assert code == 1
    assert "1.060x (+6.0%)" in out and "gate +5%: FAIL" in out
    code, out, _ = run_cli(base, candidate, "--per", "sample", "--fail-above", "6.5", capsys=capsys)
    assert code == 0 and "gate +6.5%: pass" in out
    code, _, _ = run_cli(base, candidate, "--per", "sample", capsys=capsys)
    assert code == 0  # no gate, no failure


def test_the_table_has_every_figure_side_by_side(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(runs["baseline"], runs["candidate"], capsys=capsys)
    assert code == 0 and "comparing the newest run under" in err
    lines = {line.split("  ")[0]: line for line in out.splitlines()}
    assert "baseline (baseline)" in out.splitlines()[0]
    assert lines["IT per sample"].split()[3:] == ["10", "J/sample", "10.6", "J/sample"]
    per_token = lines["IT per token"].split()[3:]
    assert per_token == ["250", "J", "per", "1k", "tokens", "265", "J", "per", "1k", "tokens"]
    assert lines["IT per epoch"].split()[3:] == ["1,000", "J/epoch", "1,060", "J/epoch"]
    assert lines["samples"].split()[1:] == ["300", "300"]
    assert lines["emissions"].split()[1:] == ["0.3333", "g", "CO2e", "0.3533", "g", "CO2e"]
    assert "vs baseline (IT per sample)" in out  # auto: both runs counted samples


def test_a_difference_beyond_the_epochs_noise_is_told_from_one_within_it(
    runs: dict[str, Path],
) -> None:
    steady = compare_runs([runs["baseline"], runs["candidate"]], per="sample")
    noisy = compare_runs([runs["baseline"], runs["noisy"]], per="sample")
    for comparison in (steady, noisy):
        assert comparison.verdicts[1].change_pct == pytest.approx(6.0)
    # baseline 10, 10.1, 9.9 J/sample and candidate 10.6, 10.7, 10.5: se 0.1/sqrt(3) each
    assert steady.verdicts[1].z == pytest.approx(0.6 / (0.1 * (2 / 3) ** 0.5))
    assert steady.verdicts[1].beyond_noise is True
    assert noisy.verdicts[1].beyond_noise is False
    assert noisy.verdicts[1].z is not None and abs(noisy.verdicts[1].z) < 2


def test_runs_of_identical_or_single_epochs_say_so(tmp_path: Path) -> None:
    same = [(1000.0, 100, None)] * 3
    a, b = recorded_run(tmp_path, "a", same), recorded_run(tmp_path, "b", same)
    alike = compare_runs([a, b], per="sample").verdicts[1]
    assert alike.ratio == 1.0 and alike.z == 0.0 and alike.beyond_noise is False
    one = recorded_run(tmp_path, "one", [(2000.0, 100, None)])
    lone = compare_runs([a, one], per="sample").verdicts[1]
    assert lone.ratio == 2.0 and lone.z is None and lone.beyond_noise is None


def test_json_output_carries_the_figures_and_the_verdict(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = (runs["baseline"], runs["candidate"], "--per", "token", "--fail-above", "5", "--json")
    code, out, _ = run_cli(*args, capsys=capsys)
    document = json.loads(out)
    assert code == 1 and document["failed"] is True and document["per"] == "token"
    base, candidate = document["runs"]
    assert base["it_energy_j_per_token"] == pytest.approx(3000 / 12_000)
    assert candidate["value_j"] == pytest.approx(3180 / 12_000)
    assert candidate["ratio"] == pytest.approx(1.06) and candidate["exceeds"] is True
    assert candidate["noise"]["epochs"] == 3 and candidate["noise"]["beyond_noise"] is True
    assert base["samples"] == 300 and base["tokens"] == 12_000
    assert "sqrt(n)" in document["statistic"]


def test_markdown_output_is_a_pull_request_comment(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    args = (runs["baseline"], runs["candidate"], "--per", "epoch", "--fail-above", "5")
    code, out, _ = run_cli(*args, "--markdown", capsys=capsys)
    assert code == 1
    assert out.startswith("### Energy comparison\n\n**IT energy per epoch vs ")
    assert "| IT per epoch | 1,000 J/epoch | 1,060 J/epoch |" in out
    assert "| gate (fail above +5%) | baseline | FAIL |" in out
    header, rule = out.split("\n\n")[2].splitlines()[:2]
    assert header.count("|") == rule.count("|") == 4


def test_runs_on_different_hardware_and_places_are_compared_with_a_note(tmp_path: Path) -> None:
    a = recorded_run(tmp_path, "a", BASELINE, model="NVIDIA A100", location="DE")
    b = recorded_run(tmp_path, "b", SLOWER, model="NVIDIA H100", location="FR")
    notes = compare_runs([a, b], per="run").notes
    assert any(
        "different hardware" in n and "NVIDIA A100" in n and "NVIDIA H100" in n for n in notes
    )
    assert any("different locations" in n and "DE" in n and "FR" in n for n in notes)
    same = recorded_run(tmp_path, "c", SLOWER, model="NVIDIA A100", location="DE")
    assert compare_runs([a, same], per="run").notes == []


def test_a_run_still_running_or_failed_is_compared_with_a_note(tmp_path: Path) -> None:
    base = recorded_run(tmp_path, "base", BASELINE)
    meter = LedgerMeter()
    tracker = tracker_on(meter, tmp_path, "live")
    with tracker:
        tracker.epoch_start()
        meter.energy_j += 1000.0
        tracker.epoch_end(samples=100)
        comparison = compare_runs([base, tracker.run_dir])  # while it runs
        tracker.epoch_start()  # the next epoch has not ended
        assert compare_runs([base, tracker.run_dir]).verdicts[1].value_j == 10.0
    (note,) = comparison.notes
    assert f"{tracker.run_dir} has not finished (status running)" in note
    assert "1 epoch" in note
    with pytest.raises(ZeroDivisionError), tracker_on(meter, tmp_path, "crash") as crashed:
        crashed.epoch_start()
        meter.energy_j += 1000.0
        crashed.epoch_end(samples=100)
        raise ZeroDivisionError
    (note,) = compare_runs([base, crashed.run_dir]).notes
    assert "has not finished (status failed)" in note
    assert compare_runs([base, base.parent.parent / "live"]).notes == []  # finished now


def test_a_run_without_work_in_the_unit_is_an_error_naming_it_and_the_unit(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_cli(runs["baseline"], runs["noisy"], "--per", "token", capsys=capsys)
    assert code == 2 and out == ""
    assert f"error: {runs['noisy']} (run r) counted no tokens" in err
    assert "Tracker.add_work(tokens=...)" in err
    # auto falls back to a unit every run has: samples here
    code, out, _ = run_cli(runs["baseline"], runs["noisy"], capsys=capsys)
    assert code == 0 and "vs baseline (IT per sample)" in out


def test_bad_arguments_are_one_line_errors(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    base, candidate = runs["baseline"], runs["candidate"]
    for args, message in (
        ((base, candidate, "--fail-above", "-1"), "--fail-above must be a percentage >= 0"),
        ((base, candidate, "--fail-above", "nan"), "--fail-above must be a percentage >= 0"),
        ((base, base / "r"), "are the same run"),
        ((base, base / ".." / base.name), "are the same run"),  # another path to it
        ((base,), "at least two different runs"),
        ((base, runs["baseline"].parent / "nothing"), "not a wattprint run directory"),
        (("", candidate), "RUN must be a non-empty path"),  # an unset shell variable
        ((base, candidate, "--baseline", ""), "RUN must be a non-empty path"),
    ):
        code, _, err = run_cli(*args, capsys=capsys)
        assert code == 2 and message in err, err


def test_the_baseline_can_be_named_and_need_not_come_first(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    comparison = compare_runs([runs["candidate"], runs["baseline"]], baseline=runs["baseline"])
    assert [v.run.label for v in comparison.verdicts] == [
        str(runs["baseline"]),
        str(runs["candidate"]),
    ]
    code, out, _ = run_cli(runs["candidate"], "--baseline", runs["baseline"], capsys=capsys)
    assert code == 0 and "+6.0%" in out


def test_a_merged_run_compares_with_a_single_one(tmp_path: Path) -> None:
    node0 = recorded_run(tmp_path / "n0", "job", [(500.0, 50, None), (505.0, 50, None)])
    node1 = recorded_run(tmp_path / "n1", "job", [(500.0, 50, None), (505.0, 50, None)])
    merge_runs([node0, node1], tmp_path / "merged")
    single = recorded_run(tmp_path, "single", [(1000.0, 100, None), (1010.0, 100, None)])
    verdict = compare_runs([single, tmp_path / "merged"], per="sample").verdicts[1]
    assert verdict.ratio == pytest.approx(1.0)
    assert verdict.run.samples == 200


def test_the_ci_gate_in_a_shell(tmp_path: Path) -> None:
    recorded_run(tmp_path, "baseline", BASELINE)
    recorded_run(tmp_path, "candidate", SLOWER)
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    args = ("compare", f"{tmp_path / 'baseline'}/", f"{tmp_path / 'candidate'}/", "--per", "sample")
    failing = wattprint(*args, "--fail-above", "5", env=env)
    assert failing.returncode == 1, failing.stderr
    assert "gate +5%: FAIL" in failing.stdout
    passing = wattprint(*args, "--fail-above", "10", env=env)
    assert passing.returncode == 0 and "gate +10%: pass" in passing.stdout


def test_a_row_gives_every_run_in_the_same_scale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded_run(tmp_path, "light", [(0.9, 1000, None)] * 2)  # 0.9 mJ per sample
    recorded_run(tmp_path, "heavy", [(2.0, 1000, None)] * 2)  # 2 mJ per sample
    code, out, _ = run_cli(tmp_path / "light", tmp_path / "heavy", capsys=capsys)
    assert code == 0
    lines = {line.split("  ")[0]: line for line in out.splitlines()}
    per_sample = lines["IT per sample"].split()[3:]
    assert per_sample == ["900", "J", "per", "1M", "samples", "2,000", "J", "per", "1M", "samples"]


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("totals", None),
        ("totals", [1]),
        ("hardware", "gpu"),
        ("hardware", [1, 2]),
        ("location", 5),
        ("location", {"code": "DE"}),
        ("intensity", "grid"),
        ("pue", "x"),
    ],
)
def test_a_hand_edited_run_json_of_the_wrong_shape_is_a_one_line_error_naming_it(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str], key: str, value: object
) -> None:
    path = runs["candidate"] / "r" / "run.json"
    document = json.loads(path.read_text()) | {key: value}
    path.write_text(json.dumps(document))
    for command in (("compare", runs["baseline"]), ("report",)):
        code = main([*map(str, command), str(runs["candidate"])])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert code == 2, err
        assert err.startswith("wattprint: error:") and "run.json" in err and key in err, err


def test_a_small_epoch_noise_is_shown_in_its_own_digits_not_as_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    steady = [(1000.0, 100, None), (1000.1, 100, None), (999.9, 100, None)]  # se 0.0058%
    recorded_run(tmp_path, "a", steady)
    recorded_run(tmp_path, "b", steady)
    code, out, _ = run_cli(tmp_path / "a", tmp_path / "b", capsys=capsys)
    (noise,) = [line for line in out.splitlines() if line.startswith("epoch noise")]
    assert code == 0 and noise.split()[2] == "±0.0058%", noise


def test_an_epochs_csv_that_is_not_text_is_a_one_line_error_naming_it(
    runs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    (runs["candidate"] / "r" / "epochs.csv").write_bytes(b"\xff\xfe\x00 not a CSV\n")
    for command in (("compare", runs["baseline"]), ("report",)):
        assert main([*map(str, command), str(runs["candidate"])]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("wattprint: error:") and "epochs.csv" in err, err


def test_json_of_runs_whose_epochs_are_each_alike_is_valid_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded_run(tmp_path, "a", [(1000.0, 100, None)] * 3)  # steady, as an estimate reads
    recorded_run(tmp_path, "b", [(1100.0, 100, None)] * 3)
    code, out, err = run_cli(tmp_path / "a", tmp_path / "b", "--json", capsys=capsys)
    assert code == 0, err
    noise = json.loads(out)["runs"][1]["noise"]
    assert noise["z"] is None and noise["beyond_noise"] is True  # infinitely many se apart
