"""Hermetic defaults for every test: no host powercap, no host GPUs, no location from the shell."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Point RAPL and sysfs at empty trees, hide the host's amdsmi and ROCm, and clear variables
    that would leak the host into a test."""
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(tmp_path / "no-powercap"))
    monkeypatch.setenv("WATTPRINT_SYSFS_ROOT", str(tmp_path / "no-sysfs"))
    monkeypatch.setenv("ROCM_PATH", str(tmp_path / "no-rocm"))
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # `import amdsmi` fails, as uninstalled
    for name in (
        "WATTPRINT_LOCATION",
        "CUDA_VISIBLE_DEVICES",
        "HIP_VISIBLE_DEVICES",
        "ROCR_VISIBLE_DEVICES",
        "RANK",
        "ELECTRICITYMAPS_TOKEN",
        "WATTPRINT_ATTRIBUTION",
        "SLURM_CPUS_ON_NODE",
        "SLURM_JOB_CPUS_PER_NODE",
    ):
        monkeypatch.delenv(name, raising=False)
