"""``wattprint report`` on a recorded run: the text report, the Markdown statement and the plot."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.fake_nvml import install_no_nvml
from tests.fake_powercap import build_powercap
from tracker import Tracker
from tracker.cli.main import main

EPOCH_J = {"cpu0": (36.0, 72.0, 54.0), "dram0": (3.6, 3.6, 7.2)}  # 0.01 Wh = 36 J
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A recorded run: one CPU package and its DRAM with known energy per epoch, no GPU."""
    install_no_nvml(monkeypatch)
    root = tmp_path / "powercap"
    zones = build_powercap(root, sockets=1)
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(root))
    tracker = Tracker(
        "paper", tmp_path / "runs", intensity=250.0, pue=1.2, interval=0.05, sample_period=0.05,
        verbose=0, epochs=3, epochs_before_pred=2,
    )  # fmt: skip
    with tracker:
        for k in range(3):
            with tracker.epoch():
                for device, joules in EPOCH_J.items():
                    zones[device].add_energy_j(joules[k])
                time.sleep(0.08)
    return tracker.run_dir


def report(*args: str) -> int:
    return main(["report", *args])


def test_text_report_has_epochs_totals_prediction_provenance_and_warnings(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report(str(run_dir)) == 0
    out = capsys.readouterr().out
    table = out[out.index("Epochs\n") : out.index("  ---")].splitlines()[2:]
    epoch_rows = [line.split() for line in table]
    assert [row[0] for row in epoch_rows] == ["1", "2", "3"]
    assert [row[4] for row in epoch_rows] == ["0.01", "0.02", "0.015"]  # CPU Wh
    assert [row[6] for row in epoch_rows] == ["0.011", "0.021", "0.017"]  # IT Wh
    it_j = sum(map(sum, EPOCH_J.values()))
    total = next(line for line in out.splitlines() if line.strip().startswith("total"))
    assert f"{it_j / 3600:.4g}" in total.split() and f"{it_j * 1.2 / 3.6e6:.4g}" in total.split()
    cpu_j = sum(EPOCH_J["cpu0"])
    assert f"cpu   {cpu_j / 3600:.4g} Wh   {cpu_j / it_j:.1%}" in out
    assert "gpu   not measured" in out
    assert f"{it_j * 1.2 / 3.6e6 * 250:.4g} g CO2e" in out and "km driven by" in out
    assert "Prediction for 3 epochs, made after 2" in out
    predicted_j = 3 * (39.6 + 75.6) / 2
    assert f"{predicted_j / 3600:.4g} Wh" in out  # the prediction's IT energy
    assert f"{(it_j / predicted_j) - 1:+.1%}" in out  # actual against predicted
    assert "measured: wattprint" in out and "cpu0: RAPL energy counters" in out
    assert "intensity: constant: user-supplied constant" in out and "PUE 1.2" in out
    # The missing GPU is said once, with what is not measured, not again among the warnings.
    assert "gpu (NVML not found" in out and "Warnings: none" in out


def test_markdown_statement_states_hardware_energy_pue_intensity_emissions_and_method(
    run_dir: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert report(str(run_dir), "--markdown") == 0
    statement = capsys.readouterr().out
    co2 = sum(map(sum, EPOCH_J.values())) * 1.2 / 3.6e6 * 250
    assert statement.startswith("### Energy use and carbon emissions")
    for expected in (
        "PUE 1.2", "250 gCO2e/kWh", f"{co2:.4g} g CO2e", "| Not measured | gpu |",
        "| Method | wattprint", "RAPL energy counters", "over 3 epoch(s)",
    ):  # fmt: skip
        assert expected in statement, expected
    target = tmp_path / "statement.md"
    assert report(str(run_dir), "--markdown", str(target)) == 0
    assert target.read_text() == statement
    assert "Epochs" in capsys.readouterr().out  # the text report still goes to stdout


def test_plot_writes_a_png_that_decodes_to_a_drawn_image(run_dir: Path, tmp_path: Path) -> None:
    from matplotlib.image import imread

    target = tmp_path / "run.png"
    assert report(str(run_dir), "--plot", str(target)) == 0
    assert target.read_bytes()[:8] == PNG_SIGNATURE
    pixels = imread(target)
    height, width = pixels.shape[:2]
    assert height >= 600 and width >= 600
    assert pixels[..., :3].std() > 0.05  # lines, bars and text, not a blank canvas


@pytest.mark.parametrize(("name", "signature"), [("run.pdf", b"%PDF-"), ("run.SVG", b"<?xml")])
def test_plot_writes_the_format_the_file_suffix_names(
    run_dir: Path, tmp_path: Path, name: str, signature: bytes
) -> None:
    target = tmp_path / name
    assert report(str(run_dir), "--plot", str(target)) == 0
    assert target.read_bytes().startswith(signature)


@pytest.mark.parametrize("name", ["run.xyz", "run", "run.pgf"])
def test_plot_to_a_suffix_that_names_no_image_format_is_refused_before_any_output(
    run_dir: Path, tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / name
    assert report(str(run_dir), "--plot", str(target)) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("wattprint: error: --plot: cannot tell which format")
    assert ".png, .pdf or .svg" in captured.err
    assert not target.exists() and captured.out == ""


def test_plot_without_matplotlib_says_how_to_install_it(
    run_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an absent package looks like
    target = tmp_path / "run.png"
    assert report(str(run_dir), "--plot", str(target)) == 2
    captured = capsys.readouterr()
    assert "pip install 'wattprint[plot]'" in captured.err
    assert not target.exists() and captured.out == ""


def test_a_project_directory_reports_its_newest_run_and_a_stray_directory_is_an_error(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report(str(run_dir.parent)) == 0
    captured = capsys.readouterr()
    assert run_dir.name in captured.out and "newest run" in captured.err
    assert report(str(tmp_path / "powercap")) == 2
    assert "not a wattprint run directory" in capsys.readouterr().err


def test_text_report_shows_the_jobs_share_beside_the_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_no_nvml(monkeypatch)
    root = tmp_path / "powercap"
    zones = build_powercap(root, sockets=1, dram=False)
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(root))
    tracker = Tracker("shared", tmp_path / "runs", components=["cpu"], attribution="process")
    with tracker, tracker.epoch():
        for _ in range(8):
            zones["cpu0"].add_energy_j(36.0)
            time.sleep(0.1)
    capsys.readouterr()
    assert report(str(tracker.run_dir)) == 0
    out = capsys.readouterr().out
    assert "Attribution: process (as requested)" in out
    line = next(line for line in out.splitlines() if line.startswith("  cpu0  job "))
    job_wh, host_wh = float(line.split()[2]), float(line.split()[6])
    assert host_wh == pytest.approx(8 * 36.0 / 3600, rel=0.01)
    assert 0 <= job_wh <= host_wh
    share = float(line.split("(")[1].split("%")[0]) / 100
    assert share == pytest.approx(job_wh / host_wh, abs=0.002)
    assert line.endswith(", process)")
    assert "cpu0: RAPL energy counters, the job's share (process)" in out
