"""Runs measurement tasks in fresh processes (``benchmarks.child``) and collects their results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks.child import RESULT_MARK

REPO_ROOT = Path(__file__).resolve().parent.parent
SINGLE_THREADED_BLAS = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_task(task: dict[str, Any], timeout_s: float, env: dict[str, str] | None = None) -> Any:
    """Run one task in a fresh interpreter; its result, or ``{"error": ...}``."""
    command = [sys.executable, "-m", "benchmarks.child", json.dumps(task)]
    try:
        done = subprocess.run(
            command,
            cwd=REPO_ROOT,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout_s:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK) :])
    last = (done.stderr.strip().splitlines() or ["(nothing on stderr)"])[-1]
    return {"error": f"exited {done.returncode} without a result: {last[:200]}"}


def run_tasks(
    tasks: Sequence[dict[str, Any]],
    timeout_s: float,
    parallel: int = 1,
    env: dict[str, str] | None = None,
) -> list[Any]:
    """Run tasks one at a time, or ``parallel`` at once where timing is not what they measure."""
    if parallel <= 1:
        return [run_task(task, timeout_s, env) for task in tasks]
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        return list(pool.map(lambda task: run_task(task, timeout_s, env), tasks))


def error_of(result: Any) -> str | None:
    """The error a task reported, if it failed."""
    if isinstance(result, dict) and "error" in result:
        return str(result["error"])
    return None
