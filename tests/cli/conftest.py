"""The machine the command-line tests run on, for the commands they start as subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fake_powercap import build_powercap


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user on a machine with a two-socket RAPL tree and no NVIDIA driver."""
    root = tmp_path / "powercap"
    build_powercap(root, sockets=2)
    return os.environ | {"WATTPRINT_POWERCAP_ROOT": str(root), "PYTHONUNBUFFERED": "1"}
