"""A recorded run as ``from_run`` reads it, for the estimate tests here and in ``tests/cli``."""

from __future__ import annotations

import json
from pathlib import Path

KWH = 3.6e6
"""Joules per kWh."""


def recorded_run(tmp_path: Path, prediction: dict[str, float] | None) -> Path:
    """``tmp_path`` with a run.json alone: 10 kWh IT over 2 h at PUE 1.5, and ``prediction``."""
    doc = {
        "totals": {"energy_j": 10 * KWH, "duration_s": 7200.0},
        "pue": 1.5,
        "prediction": prediction,
    }
    (tmp_path / "run.json").write_text(json.dumps(doc), encoding="utf-8")
    return tmp_path
