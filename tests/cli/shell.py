"""``wattprint`` as a user's shell runs it: ``python -m tracker.cli`` in a subprocess."""

from __future__ import annotations

import subprocess
import sys


def wattprint(
    *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``wattprint ARGS`` under ``env``: its exit status, stdout and stderr (text)."""
    return subprocess.run(
        [sys.executable, "-m", "tracker.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
