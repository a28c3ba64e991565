"""``%load_ext tracker``: the ``%%wattprint`` and ``%wattprint`` magics in a real IPython shell."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell

from tests.fake_nvml import install_no_nvml
from tracker import load_run
from tracker.notebook import CellMeasurement


@pytest.fixture
def shell(monkeypatch: pytest.MonkeyPatch) -> Iterator[InteractiveShell]:
    """IPython's shell with the extension loaded afresh (no measurement from an earlier test)."""
    install_no_nvml(monkeypatch)
    shell = InteractiveShell.instance()
    shell.run_line_magic("reload_ext", "tracker")
    yield shell
    shell.user_ns.pop("measured", None)


def runs(logs: Path) -> list[Path]:
    return sorted((logs / "nb").iterdir()) if (logs / "nb").is_dir() else []


def test_a_cell_is_one_epoch_of_its_own_run_and_keeps_its_value(
    shell: InteractiveShell, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "runs"
    cell = "import time\ntime.sleep(0.2)\nmeasured = 41\nmeasured + 1\n"
    result = shell.run_cell(f"%%wattprint --project nb --log-dir {logs} --location SE\n{cell}")
    assert result.success and result.result == 42
    assert shell.user_ns["measured"] == 41
    (run_dir,) = runs(logs)
    epochs = load_run(run_dir)
    assert len(epochs) == 1 and not epochs["partial"].iloc[0]
    assert epochs["duration_s"].iloc[0] >= 0.2 and epochs["co2_g"].iloc[0] > 0
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"
    shown = capsys.readouterr().out
    assert "wattprint epoch 1:" in shown and "gCO2e" in shown and str(run_dir) in shown

    last = shell.run_line_magic("wattprint", "")
    assert isinstance(last, CellMeasurement) and last.summary.run_dir == str(run_dir)
    assert shell.display_formatter is not None
    bundle, _ = shell.display_formatter.format(last)
    assert "gCO2e" in bundle["text/plain"]
    assert bundle["text/html"].startswith("<table>") and "facility energy" in bundle["text/html"]
    assert "36 gCO2e/kWh" in bundle["text/html"]  # Sweden's intensity, priced per cell


def test_a_cell_that_raises_records_a_partial_epoch_and_raises_on(
    shell: InteractiveShell, tmp_path: Path
) -> None:
    logs = tmp_path / "runs"
    result = shell.run_cell(
        f"%%wattprint --project nb --log-dir {logs}\nmeasured = 'before'\n1 / 0\nmeasured = 'after'"
    )
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    assert shell.user_ns["measured"] == "before"
    (run_dir,) = runs(logs)
    epochs = load_run(run_dir)
    assert len(epochs) == 1 and epochs["partial"].iloc[0]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    last = shell.run_line_magic("wattprint", "")
    assert last.record.partial and "partial" in last._repr_html_()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("--pue 0.5", "pue must be >= 1.0"),
        ("--pue nan", "--pue must be a finite number"),
        ("--pue lots", "invalid float value"),
        ("--location Atlantis", "Atlantis"),
        ("--project ../up", "project must be a name"),
        ("--gpus 0", "unrecognized arguments: --gpus"),
        ('--project "unclosed', "No closing quotation"),
    ],
)
def test_bad_options_are_one_clear_error_and_the_cell_does_not_run(
    shell: InteractiveShell,
    tmp_path: Path,
    options: str,
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    logs = tmp_path / "runs"
    result = shell.run_cell(f"%%wattprint --log-dir {logs} {options}\nmeasured = 1")
    assert isinstance(result.error_in_exec, UsageError)
    assert message in str(result.error_in_exec)
    assert "measured" not in shell.user_ns
    assert not logs.exists()
    assert "Traceback" not in capsys.readouterr().out


def test_options_are_quoted_as_in_a_shell(shell: InteractiveShell, tmp_path: Path) -> None:
    logs = tmp_path / "my runs"
    result = shell.run_cell(f"%%wattprint --project 'nb' --log-dir \"{logs}\" --pue 1.1\n1")
    assert result.success, result.error_in_exec
    (run_dir,) = runs(logs)
    assert json.loads((run_dir / "run.json").read_text())["pue"] == 1.1


def test_each_cell_is_a_new_run_and_the_line_magic_shows_the_last(
    shell: InteractiveShell, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "runs"
    assert shell.run_line_magic("wattprint", "") is None
    assert "no cell measured yet" in capsys.readouterr().out
    made: list[Path] = []
    for value in (1, 2):
        result = shell.run_cell(f"%%wattprint --project nb --log-dir {logs}\nmeasured = {value}")
        assert result.success and result.result is None
        (new,) = set(runs(logs)) - set(made)
        made.append(new)
        assert len(load_run(new)) == 1
        assert shell.run_line_magic("wattprint", "").summary.run_dir == str(new)
    with pytest.raises(UsageError, match="takes no options"):
        shell.run_line_magic("wattprint", "--pue 1.2")


def test_import_tracker_does_not_import_ipython() -> None:
    code = "import sys, tracker; print('IPython' in sys.modules, 'tracker.notebook' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_a_log_dir_that_cannot_be_written_is_a_warning_in_the_summary(
    shell: InteractiveShell, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    result = shell.run_cell(f"%%wattprint --log-dir {blocker}\nmeasured = 1")
    assert result.success and shell.user_ns["measured"] == 1
    assert "warning: cannot write the logs" in capsys.readouterr().out
    last = shell.run_line_magic("wattprint", "")
    assert "cannot write the logs" in last._repr_html_() and last.record.co2_g > 0
