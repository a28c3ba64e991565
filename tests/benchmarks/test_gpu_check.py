"""``python -m benchmarks gpu-check --simulated`` runs end to end, before any GPU is lent."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_end_to_end_on_the_simulated_nvml(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    blocker = tmp_path / "no-torch"  # a torch that cannot be imported: the check must not need it
    blocker.mkdir()
    (blocker / "torch.py").write_text("raise ImportError('torch is not installed here')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(blocker), str(ROOT)))}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "gpu-check",
            "--simulated",
            "--quick",
            "--json",
            str(out),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert result["mode"] == "simulated"
    nvml = result["nvml"]
    assert nvml["energy_counter"]["update_period_ms"] is not None
    assert 80 < nvml["energy_counter"]["update_period_ms"] < 120  # the simulated 100 ms steps
    assert nvml["power_instant"]["read_cost_us_median"] > 0
    drift = nvml["clock_drift"]  # the simulated boards keep the host's time exactly
    assert abs(drift["ppm"]) <= 3 * drift["doubt_ppm"] + 1.0
    auto, off = result["accuracy"]["sync_auto"], result["accuracy"]["sync_off"]
    # Without sync the queued last batch of every epoch lands in the next one.
    assert off["vs_exact_mean_pct"] > auto["vs_exact_mean_pct"]
    assert result["follower_cpu"]["tracked_pct_core"] >= 0
    assert result["hooks"]["epoch_end_median_ms"] > 0
    assert "gpu-check (simulated)" in done.stdout
