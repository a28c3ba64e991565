"""The suite's results: one row per benchmark figure, printed as a table and written as CSV/JSON.

Columns: the figure for wattprint and each peer, the ratio ours / theirs for each peer, the goal
and whether wattprint meets it. A tool with no figure shows ``-`` and the reason goes in the notes.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.tools import PEERS, TOOLS


@dataclass(slots=True)
class Row:
    """One figure measured for every tool, with its goal for wattprint."""

    benchmark: str
    metric: str
    unit: str
    values: dict[str, float | None]
    goal: str = ""
    check: Callable[[Row], bool | None] | None = field(default=None, repr=False)
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def ours(self) -> float | None:
        """wattprint's figure."""
        return self.values.get("wattprint")

    def ratio(self, peer: str) -> float | None:
        """wattprint / peer, where both figures exist and are positive (zero for ours)."""
        ours, theirs = self.ours, self.values.get(peer)
        if ours is None or theirs is None or ours < 0 or not theirs > 0:
            return None
        if not math.isfinite(theirs):
            return None
        return ours / theirs

    @property
    def met(self) -> bool | None:
        """Whether wattprint meets the goal; None where there is no goal or no figure."""
        if self.check is None or self.ours is None:
            return None
        return self.check(self)


def below(limit: float) -> Callable[[Row], bool | None]:
    """Goal: wattprint's figure is under ``limit``."""
    return lambda row: row.ours is not None and row.ours < limit


def below_and_ratio(limit: float, ratio: float) -> Callable[[Row], bool | None]:
    """Goal: under ``limit`` and at most ``ratio`` times each peer that has a figure."""

    def check(row: Row) -> bool | None:
        ratios = [row.ratio(peer) for peer in PEERS if row.values.get(peer) is not None]
        return (
            row.ours is not None
            and row.ours < limit
            and all(r is not None and r <= ratio for r in ratios)
        )

    return check


def table(rows: Sequence[Row]) -> str:
    """The rows as a fixed-width text table, notes listed below it."""
    header = [
        "benchmark",
        "metric",
        "unit",
        *TOOLS,
        *(f"ours/{_short(p)}" for p in PEERS),
        "goal",
        "met",
    ]
    body = [_cells(row) for row in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True))
        for line in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = sorted({f"{tool}: {note}" for row in rows for tool, note in row.notes.items()})
    if notes:
        lines += ["", "notes:", *(f"  {note}" for note in notes)]
    return "\n".join(line.rstrip() for line in lines)


def write_csv(rows: Sequence[Row], path: str | Path) -> None:
    """One CSV line per row: figures, ratios, goal, met and notes."""
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(
            [
                *("benchmark", "metric", "unit", *TOOLS),
                *(f"ratio_{p}" for p in PEERS),
                *("goal", "met", "notes"),
            ]
        )
        for row in rows:
            writer.writerow(
                [
                    row.benchmark,
                    row.metric,
                    row.unit,
                    *(_plain(row.values.get(t)) for t in TOOLS),
                    *(_plain(row.ratio(p)) for p in PEERS),
                    row.goal,
                    "" if row.met is None else row.met,
                    "; ".join(f"{t}: {n}" for t, n in sorted(row.notes.items())),
                ]
            )


def write_json(rows: Sequence[Row], path: str | Path, environment: dict[str, Any]) -> None:
    """The environment (date, machine, versions) and every row, ratios included."""
    document = {
        "environment": environment,
        "rows": [
            {
                "benchmark": row.benchmark,
                "metric": row.metric,
                "unit": row.unit,
                "values": row.values,
                "ratios": {p: row.ratio(p) for p in PEERS},
                "goal": row.goal,
                "met": row.met,
                "notes": row.notes,
            }
            for row in rows
        ],
    }
    Path(path).write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def _cells(row: Row) -> list[str]:
    return [
        row.benchmark,
        row.metric,
        row.unit,
        *(_figure(row.values.get(t)) for t in TOOLS),
        *(_ratio(row.ratio(p)) for p in PEERS),
        row.goal,
        {None: "", True: "yes", False: "NO"}[row.met],
    ]


def _figure(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0 or 0.01 <= abs(value) < 1e5:
        return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
    return f"{value:.2e}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}x"


def _plain(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _short(peer: str) -> str:
    return {"carbontracker": "ct", "codecarbon": "cc", "zeus": "zeus"}.get(peer, peer)
