"""The entry point: a user error is one ``wattprint: error:`` line and exit status 2."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli.shell import wattprint
from tests.fake_nvml import install_no_nvml
from tracker import load_run
from tracker.cli.main import main


def test_cli_user_errors_are_one_line_without_traceback(env: dict[str, str]) -> None:
    result = wattprint("run", "--pue", "0.5", "--", "true", env=env)
    assert result.returncode == 2
    assert result.stderr.startswith("wattprint: error: pue must be >= 1.0")
    assert "Traceback" not in result.stderr
    missing = wattprint("run", env=env)
    assert missing.returncode == 2 and "needs a command" in missing.stderr


def test_intensity_text_needs_a_unit_per_kwh_in_run_and_in_estimate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install_no_nvml(monkeypatch)
    monkeypatch.chdir(tmp_path)
    for argv in (
        ["run", "--intensity", "5kg", "--", "true"],
        ["estimate", "1000W:1", "--hours", "1", "--intensity", "5kg"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("wattprint: error: intensity '5kg' gives a mass but not per what")
        assert "'5kg/kWh'" in err
    assert not (tmp_path / "wattprint-runs").exists()
    assert main(["estimate", "1000W:1", "--hours", "100", "--intensity", "0.5kg/kWh"]) == 0
    assert "emissions 50 kg CO2e" in capsys.readouterr().out
    run = ["run", "--quiet", "--interval", "0.05", "--intensity", "0.5kg/kWh", "--"]
    assert main([*run, sys.executable, "-c", "import time; time.sleep(0.2)"]) == 0
    (run_dir,) = (tmp_path / "wattprint-runs" / "default").iterdir()
    assert load_run(run_dir)["intensity_g_per_kwh"].iloc[0] == pytest.approx(500.0)


F_SETPIPE_SZ = 1031  # Linux's fcntl command that sets a pipe's buffer size


def test_a_reader_that_leaves_early_gets_no_traceback(env: dict[str, str]) -> None:
    """``wattprint locations | head -1``: the pipe closes under the listing."""
    listing = subprocess.Popen(
        [sys.executable, "-m", "tracker.cli", "locations"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    assert listing.stdout is not None and listing.stderr is not None
    fcntl.fcntl(listing.stdout.fileno(), F_SETPIPE_SZ, 4096)  # smaller than the listing
    listing.stdout.readline()
    listing.stdout.close()
    errors = listing.stderr.read().decode()
    assert listing.wait(timeout=60) == 0 and errors == ""
