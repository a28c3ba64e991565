"""Run ``tests.faults.training`` (or any script) in a real subprocess and strike it mid-epoch.

Every wait is bounded: a child that hangs is killed and the test fails, it never blocks the suite.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pandas as pd

from tests.faults.simulated import WAIT_S
from tracker import load_run

REPO = Path(__file__).resolve().parents[2]


def child_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a child: this checkout importable, no host RAPL, no location."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WATTPRINT_", "CUDA_"))}
    env |= {
        "PYTHONPATH": str(REPO),
        "WATTPRINT_POWERCAP_ROOT": str(tmp_path / "no-powercap"),
        "PYTHONUNBUFFERED": "1",
    }
    return env


class Child:
    """A Python subprocess whose stdout lines can be awaited one by one."""

    def __init__(self, args: list[str], tmp_path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            env=child_env(tmp_path),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: list[str] = []
        self._stderr: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._pumps = [
            threading.Thread(target=self._pump_stdout, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for pump in self._pumps:
            pump.start()

    @classmethod
    def training(cls, log_dir: Path, *options: str) -> Child:
        """``python -m tests.faults.training LOG_DIR OPTIONS...``."""
        return cls(["-m", "tests.faults.training", str(log_dir), *options], log_dir.parent)

    def wait_for(self, line: str) -> None:
        """Read stdout until ``line``; fail if the child ends or stays silent too long first."""
        while True:
            try:
                got = self._queue.get(timeout=WAIT_S)
            except queue.Empty:
                self.process.kill()
                raise AssertionError(f"no {line!r} within {WAIT_S} s; got {self.lines}") from None
            if got is None:
                raise AssertionError(f"child ended before {line!r}: {self.finish()}")
            if got == line:
                return

    def send(self, signum: int) -> None:
        self.process.send_signal(signum)

    def finish(self, timeout_s: float = WAIT_S) -> tuple[int, str, str]:
        """Wait for the end: (exit status, all stdout, stderr)."""
        try:
            self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise AssertionError(f"child still running after {timeout_s} s (hung?)") from None
        for pump in self._pumps:
            pump.join(timeout=WAIT_S)
        return self.process.returncode, "\n".join(self.lines), "".join(self._stderr)

    def _pump_stdout(self) -> None:
        assert self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.rstrip("\n")
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)

    def _pump_stderr(self) -> None:
        assert self.process.stderr is not None
        self._stderr.extend(self.process.stderr)


def epochs_of(run_dir: Path) -> pd.DataFrame:
    """``epochs.csv`` of a run, parsed (raises if any line is not whole)."""
    return load_run(run_dir)


def run_json(run_dir: Path) -> dict[str, Any]:
    """``run.json`` of a run, parsed (raises if it is not whole)."""
    document: dict[str, Any] = json.loads((run_dir / "run.json").read_text())
    return document
