"""The README's Python examples: every import they make works, and the runnable ones run.

Examples that need a model, a dataset, a token or several processes are checked for their
imports only; the others run whole, in a fresh interpreter in an empty directory, with a no-op
``train_one_epoch`` where they call one.
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.processes import child_env

README = Path(__file__).resolve().parents[1] / "README.md"
EXAMPLES = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
RUNNABLE = (
    "load_run(t.run_dir",
    "@track(",
    "CarbonTracker(epochs",
    "equivalents(1000)",
    "estimate(",
)
FRAMEWORKS = ("lightning", "transformers", "keras", "torch")


def imports(example: str) -> list[tuple[str, list[str]]]:
    """The (module, names) an example imports."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(example)):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
    return found


def test_the_readme_has_its_examples() -> None:
    assert len(EXAMPLES) >= 10
    assert all(any(marker in e for e in EXAMPLES) for marker in RUNNABLE)


@pytest.mark.parametrize("example", EXAMPLES, ids=[f"example-{i}" for i in range(len(EXAMPLES))])
def test_every_import_in_the_readme_works(example: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_BACKEND", "torch")  # Keras 3 on the torch the tests install
    for module, names in imports(example):
        for framework in set(module.split(".")) & set(FRAMEWORKS):  # not in the core suite
            pytest.importorskip(framework)
        imported = importlib.import_module(module)
        for name in names:
            assert hasattr(imported, name), f"{module} has no {name}"


@pytest.mark.parametrize(
    "example",
    [e for e in EXAMPLES if any(marker in e for marker in RUNNABLE)],
    ids=lambda e: next(marker for marker in RUNNABLE if marker in e),
)
def test_the_runnable_readme_examples_run_as_written(example: str, tmp_path: Path) -> None:
    prelude = "def train_one_epoch():\n    pass\n\n"
    done = subprocess.run(
        [sys.executable, "-c", prelude + example],
        cwd=tmp_path, env=child_env(tmp_path), capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
