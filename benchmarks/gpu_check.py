"""``python -m benchmarks gpu-check``: what a borrowed NVIDIA GPU says about NVML and wattprint.

    python -m benchmarks gpu-check [--simulated] [--json FILE] [--quick]

In a few minutes on one GPU (needs only torch, nvidia-ml-py, psutil and pandas) it measures:

1. NVML facts: the read cost and update period of the energy counter, the averaged power
   (``nvmlDeviceGetPowerUsage``) and the instant power field (``NVML_FI_DEV_POWER_INSTANT``);
   where within a counter read its value can be taken; the drift of the counter's update clock
   against the host's over the length of the check.
2. The tracker against direct counter reads over bursty epochs whose last burst is still queued
   at ``epoch_end``, with ``sync="auto"`` and ``sync=False``.
3. The follower's CPU cost (% of one core for the GPU followed) at the default interval.
4. The hook cost (``epoch_start``/``epoch_end`` wall time).

It prints a table and writes everything as JSON. ``--simulated`` runs the same on the simulated
NVML of ``tests/fake_nvml.py`` with a stand-in ``torch.cuda`` whose queue drains on a timer (no
torch needed, under a minute), so the script is known to work before a GPU is at hand. torch is
imported only in the real mode.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import threading
import time
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pynvml

IDLE_W = 90.0


@dataclass(frozen=True, slots=True)
class Plan:
    """How long each part runs: the real check fits 8 minutes, the simulated one a minute."""

    facts_s: float
    epochs: int
    shortest_s: float
    longest_s: float
    queued_s: float
    cpu_s: float
    hook_epochs: int


REAL = Plan(
    facts_s=20.0, epochs=10, shortest_s=2.0, longest_s=8.0, queued_s=0.3, cpu_s=30.0, hook_epochs=60
)
SIMULATED = Plan(
    facts_s=3.0, epochs=5, shortest_s=0.6, longest_s=1.5, queued_s=0.3, cpu_s=8.0, hook_epochs=20
)
QUICK = Plan(
    facts_s=2.0, epochs=3, shortest_s=0.5, longest_s=1.0, queued_s=0.2, cpu_s=3.0, hook_epochs=10
)


def main(argv: list[str]) -> int:
    """Run the check, print its table and write its JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks gpu-check", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--simulated", action="store_true", help="simulated NVML, no GPU/torch")
    parser.add_argument("--quick", action="store_true", help="shortest run (a smoke test)")
    parser.add_argument("--json", metavar="FILE", default="gpu-check.json", help="JSON output")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else SIMULATED if args.simulated else REAL
    try:  # fail now, not after minutes on a borrowed GPU
        with open(args.json, "a", encoding="utf-8"):
            pass
    except OSError as error:
        raise SystemExit(f"gpu-check: cannot write --json {args.json}: {error}") from error
    started = time.monotonic()
    board = SimulatedBoard() if args.simulated else RealBoard()
    try:
        result: dict[str, Any] = {
            "mode": "simulated" if args.simulated else "real",
            "device": board.describe(),
            "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
        result["nvml"] = _section("NVML facts", lambda: nvml_facts(board, plan))
        first = result["nvml"].get("energy_counter", {}).pop("centres", [])
        result["accuracy"] = {
            "sync_auto": _section("accuracy, sync auto", lambda: accuracy(board, plan, "auto")),
            "sync_off": _section("accuracy, sync off", lambda: accuracy(board, plan, False)),
        }
        result["follower_cpu"] = _section("follower CPU", lambda: follower_cpu(board, plan))
        result["hooks"] = _section("hook cost", lambda: hook_cost(board, plan))
        result["nvml"]["clock_drift"] = _section("clock drift", lambda: _drift(board, plan, first))
    finally:
        board.close()
    result["seconds"] = round(time.monotonic() - started, 1)
    print(table(result))
    with open(args.json, "w", encoding="utf-8") as file:
        json.dump(result, file, indent=2)
    _say(f"written {args.json}")
    return 0


def _section(name: str, measure: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One part of the check; a part that fails is reported and the others still run."""
    _say(f"{name} ...")
    try:
        return measure()
    except Exception as error:  # a borrowed GPU's minutes are not thrown away for one part
        _say(f"{name} failed: {error!r}")
        return {"error": f"{type(error).__name__}: {error}"}


def _drift(board: Board, plan: Plan, first: list[float]) -> dict[str, Any]:
    with _bursting(board):
        last = _updates(_counter_read(board), plan.facts_s / 3).get("centres", [])
    return clock_drift(first, last)


# -- the board: a real GPU through torch and pynvml, or the simulated NVML ------------------------


class RealBoard:
    """CUDA device 0 and its NVML handle; bursts are bf16 matmuls queued by torch."""

    def __init__(self) -> None:
        try:
            import torch
        except ImportError as error:
            raise SystemExit(
                "gpu-check: the real check needs torch with CUDA (pip install torch); "
                "--simulated runs without it"
            ) from error
        if not torch.cuda.is_available():
            raise SystemExit("gpu-check: torch sees no CUDA device (use --simulated without one)")
        self.torch = torch
        pynvml.nvmlInit()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(_nvml_index_of_cuda0())
        self._a = torch.randn(8192, 8192, device="cuda:0", dtype=torch.bfloat16)
        self._per_s = self._matmuls_per_s()
        self.exact: Callable[[float, float], float] | None = None

    def describe(self) -> str:
        name = pynvml.nvmlDeviceGetName(self.handle)
        driver = pynvml.nvmlSystemGetDriverVersion()
        return f"{name} (driver {driver}, torch {self.torch.__version__})"

    def busy(self, seconds: float) -> None:
        """Keep the GPU busy for ``seconds``, the queue short."""
        end_s = time.monotonic() + seconds
        while time.monotonic() < end_s:
            self.queue(0.02)
            self.torch.cuda.synchronize(0)

    def queue(self, seconds: float) -> None:
        """Queue about ``seconds`` of work and return at once."""
        for _ in range(max(1, round(seconds * self._per_s))):
            _ = self._a @ self._a  # the work is the point

    def idle(self, seconds: float) -> None:
        self.torch.cuda.synchronize(0)
        time.sleep(seconds)

    def settle(self) -> None:
        self.torch.cuda.synchronize(0)

    def close(self) -> None:
        pynvml.nvmlShutdown()

    def _matmuls_per_s(self) -> float:
        self.torch.cuda.synchronize(0)
        started = time.monotonic()
        for _ in range(50):
            _ = self._a @ self._a
        self.torch.cuda.synchronize(0)
        return 50 / (time.monotonic() - started)


class SimulatedBoard:
    """A simulated H100 (``tests.fake_nvml.hopper``) and a stand-in ``torch.cuda`` whose queue
    drains on a timer: queued work keeps the board busy after the call returns."""

    def __init__(self) -> None:
        from tests.fake_nvml import SimulatedNVML, constant_power, hopper

        self.gpu = hopper(constant_power(IDLE_W))
        self._nvml = SimulatedNVML([self.gpu]).install()
        pynvml.nvmlInit()
        self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self.exact = self.gpu.energy_j
        self._drained_s = 0.0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        cuda = types.SimpleNamespace(
            is_initialized=lambda: True, synchronize=lambda device=None: self.settle()
        )
        self._torch = types.ModuleType("torch")
        self._torch.cuda = cuda  # type: ignore[attr-defined]
        self._saved = sys.modules.get("torch")
        sys.modules["torch"] = self._torch

    def describe(self) -> str:
        return f"{self.gpu.name} (simulated NVML)"

    def busy(self, seconds: float) -> None:
        self.gpu.power_w.set(600.0)
        time.sleep(seconds)
        self.gpu.power_w.set(IDLE_W)

    def queue(self, seconds: float) -> None:
        with self._lock:
            self.gpu.power_w.set(600.0)
            self._drained_s = time.monotonic() + seconds
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(seconds, self._drain)
            self._timer.start()

    def idle(self, seconds: float) -> None:
        self.settle()
        time.sleep(seconds)

    def settle(self) -> None:
        time.sleep(max(0.0, self._drained_s - time.monotonic()))
        self._drain()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        pynvml.nvmlShutdown()
        if self._saved is None:
            sys.modules.pop("torch", None)
        else:
            sys.modules["torch"] = self._saved

    def _drain(self) -> None:
        with self._lock:
            if time.monotonic() >= self._drained_s - 1e-3:
                self.gpu.power_w.set(IDLE_W)


Board = RealBoard | SimulatedBoard


# -- 1. NVML facts --------------------------------------------------------------------------------


def nvml_facts(board: Board, plan: Plan) -> dict[str, Any]:
    """Read cost and update period of each NVML power source, where a counter read samples, and
    the drift of the counter's update clock against the host's (the GPU busy meanwhile)."""
    sources: dict[str, Callable[[], float]] = {
        "energy_counter": _counter_read(board),
        "power_usage": lambda: pynvml.nvmlDeviceGetPowerUsage(board.handle),
        "power_instant": lambda: _instant_mw(board.handle),
    }
    facts: dict[str, Any] = {}
    with _bursting(board):
        for name, read in sources.items():
            facts[name] = _updates(read, plan.facts_s / len(sources))
    counter = facts["energy_counter"]
    facts["counter_sample_point"] = _sample_point(counter.get("reads", []))
    for name in sources:
        facts[name].pop("reads", None)
        if name != "energy_counter":  # the counter's update times are kept for the drift
            facts[name].pop("centres", None)
    return facts


def _counter_read(board: Board) -> Callable[[], float]:
    return lambda: float(pynvml.nvmlDeviceGetTotalEnergyConsumption(board.handle))


def _instant_mw(handle: Any) -> float:
    field = pynvml.nvmlDeviceGetFieldValues(handle, [pynvml.NVML_FI_DEV_POWER_INSTANT])[0]
    if field.nvmlReturn != pynvml.NVML_SUCCESS:
        raise pynvml.NVMLError(field.nvmlReturn)
    return float(field.value.uiVal)


@contextmanager
def _bursting(board: Board) -> Iterator[None]:
    """Vary the load every 37 ms on a thread, so every source keeps changing."""
    stop = threading.Event()

    def vary() -> None:
        while not stop.is_set():
            board.busy(0.037)
            stop.wait(0.037)

    thread = threading.Thread(target=vary, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        board.settle()


def _updates(read: Callable[[], float], seconds: float) -> dict[str, Any]:
    """Read back to back for ``seconds``: cost per read and the period between value changes."""
    reads: list[tuple[float, float, float]] = []  # (call start, call end, value)
    end_s = time.monotonic() + seconds
    try:
        while time.monotonic() < end_s:
            started = time.monotonic()
            value = read()
            reads.append((started, time.monotonic(), value))
    except pynvml.NVMLError as error:
        return {"error": str(error)}
    costs_us = [(b - a) * 1e6 for a, b, _ in reads]
    changes = [
        ((p[0] + p[1]) / 2, (c[0] + c[1]) / 2) for p, c in itertools.pairwise(reads) if c[2] != p[2]
    ]
    centres = [(a + b) / 2 for a, b in changes]
    gaps = [b - a for a, b in itertools.pairwise(centres)]
    period_s = statistics.median(gaps) if gaps else None
    return {
        "reads": reads,
        "read_cost_us_median": round(statistics.median(costs_us), 1),
        "read_cost_us_p90": round(sorted(costs_us)[int(0.9 * (len(costs_us) - 1))], 1),
        "update_period_ms": None if period_s is None else round(period_s * 1e3, 2),
        "changes": len(changes),
        "centres": centres,
    }


def _update_line(centres: list[float]) -> tuple[float, float, float] | None:
    """A line through the counter's update times: (period s, the last update s, its doubt s).

    Each change is known to within a read (~4 ms); the fit over many averages that down.
    """
    if len(centres) < 4:
        return None
    rough_s = statistics.median(b - a for a, b in itertools.pairwise(centres))
    steps = [round((c - centres[0]) / rough_s) for c in centres]
    mean_k, mean_t = statistics.fmean(steps), statistics.fmean(centres)
    spread = sum((k - mean_k) ** 2 for k in steps)
    if spread == 0:
        return None
    period_s = (
        sum((k - mean_k) * (t - mean_t) for k, t in zip(steps, centres, strict=True)) / spread
    )
    fitted = [t - (mean_t + (k - mean_k) * period_s) for k, t in zip(steps, centres, strict=True)]
    doubt_s = statistics.pstdev(fitted) / len(fitted) ** 0.5
    return period_s, mean_t + (steps[-1] - mean_k) * period_s, doubt_s


def clock_drift(first: list[float], last: list[float]) -> dict[str, Any]:
    """How fast the counter's update clock runs against the host's, in ppm of its nominal period.

    ``first`` and ``last``: change times of the counter at the start and the end of the check.
    The updates between them are counted with the nominal period (the fitted one rounded to a
    whole ms), so the longer the check, the finer the figure (its doubt is reported with it).
    """
    a, b = _update_line(first), _update_line(last)
    if a is None or b is None:
        return {"ppm": None, "why": "too few counter changes"}
    nominal_s = round(a[0], 3)
    span_s = b[1] - a[1]
    windows = round(span_s / nominal_s)
    if windows <= 0 or nominal_s <= 0:
        return {"ppm": None, "why": "no span between the two looks"}
    ppm = (span_s / windows / nominal_s - 1) * 1e6
    doubt_ppm = (a[2] + b[2]) / span_s * 1e6
    return {
        "ppm": round(ppm, 1),
        "doubt_ppm": round(doubt_ppm, 1),
        "span_s": round(span_s, 1),
        "nominal_period_ms": nominal_s * 1e3,
    }


def _sample_point(reads: list[tuple[float, float, float]]) -> dict[str, Any]:
    """Where within a counter read (0: its start, 1: its end) its value can be taken.

    For each candidate point, each change lies between that point of the last unchanged read and
    of the changed one; a point is possible where all changes fit one regular grid
    (``tracker.measure.grid.fit_grid``, on runs of consecutive updates). Reads of nearly equal
    length shift every change alike and cannot tell points apart: the range stays wide.
    """
    from tracker.measure.grid import fit_grid

    possible = []
    for tenth in range(11):
        f = tenth / 10
        changes = [
            (p[0] + f * (p[1] - p[0]), c[0] + f * (c[1] - c[0]))
            for p, c in itertools.pairwise(reads)
            if c[2] != p[2]
        ]
        runs = [changes[i : i + 8] for i in range(0, len(changes) - 7, 8)]
        if runs and all(fit_grid(run) is not None for run in runs):
            possible.append(f)
    if not possible:
        return {"from": None, "to": None, "why": "no candidate fits a regular grid"}
    return {"from": min(possible), "to": max(possible)}


# -- 2. accuracy against the counter --------------------------------------------------------------


def accuracy(board: Board, plan: Plan, sync: bool | str) -> dict[str, Any]:
    """Per-epoch GPU energy against direct counter reads, epochs ending with queued work.

    The truth's edge is taken after the GPU has finished its queue (``settle``), as the tracker's
    is with ``sync="auto"``; with ``sync=False`` the queued tail runs after the tracker's edge.
    A direct counter read is itself up to one update step off; on the simulated board the exact
    energy of the trace over the same span is a second truth.
    """
    from benchmarks.workload import epoch_plans
    from tracker import Tracker

    rows: dict[str, list[float | None]] = {"tracker_j": [], "counter_j": [], "exact_j": []}
    bounds: list[float | None] = []
    plans = epoch_plans(plan.epochs, plan.shortest_s, plan.longest_s, seed=16)
    with tempfile.TemporaryDirectory() as log_dir:
        tracker = Tracker(
            "gpu-check",
            log_dir,
            components=["gpu"],
            gpus=[0],
            intensity=300.0,
            verbose=0,
            sync=sync,
        )
        with tracker:
            time.sleep(1.0)  # the follower calibrates
            for epoch in plans:
                board.settle()
                before_j = _counter_j(board)
                tracker.epoch_start()
                _bursty(board, epoch.duration_s, epoch.duty, epoch.period_s)
                board.queue(plan.queued_s)  # the last batch, still queued at the edge
                record = tracker.epoch_end()
                board.settle()
                after_s, after_j = time.monotonic(), _counter_j(board)
                rows["tracker_j"].append(record.gpu_energy_j)
                rows["counter_j"].append(after_j - before_j)
                exact = board.exact  # the epoch's work, its queued tail included
                rows["exact_j"].append(None if exact is None else exact(record.start_s, after_s))
                bounds.append(record.it_energy_bound_j)
    return {
        **_errors(rows["tracker_j"], rows["counter_j"], "vs_counter"),
        **_errors(rows["tracker_j"], rows["exact_j"], "vs_exact"),
        "bound_pct_mean": _mean_pct(bounds, rows["tracker_j"]),
        "epochs": rows,
    }


def _bursty(board: Board, seconds: float, duty: float, period_s: float) -> None:
    end_s = time.monotonic() + seconds
    while (left_s := end_s - time.monotonic()) > 0:
        board.busy(min(period_s * duty, left_s))
        idle_s = min(period_s * (1 - duty), end_s - time.monotonic())
        if idle_s > 0.01:
            board.idle(idle_s)


def _counter_j(board: Board) -> float:
    return float(pynvml.nvmlDeviceGetTotalEnergyConsumption(board.handle)) / 1e3


def _errors(ours: list[float | None], truth: list[float | None], name: str) -> dict[str, Any]:
    pairs = [(o, t) for o, t in zip(ours, truth, strict=True) if o is not None and t]
    if not pairs:
        return {}
    errors = [abs(o - t) / t * 100 for o, t in pairs]
    return {f"{name}_mean_pct": statistics.fmean(errors), f"{name}_worst_pct": max(errors)}


def _mean_pct(bounds: list[float | None], energies: list[float | None]) -> float | None:
    pairs = [(b, e) for b, e in zip(bounds, energies, strict=True) if b is not None and e]
    return statistics.fmean(b / e * 100 for b, e in pairs) if pairs else None


# -- 3. follower CPU and 4. hook cost ------------------------------------------------------------


def follower_cpu(board: Board, plan: Plan) -> dict[str, Any]:
    """CPU seconds per wall second of this process, idle and while tracking one GPU."""
    from tracker import Tracker

    board.settle()
    idle = _cpu_share(plan.cpu_s / 2)
    with tempfile.TemporaryDirectory() as log_dir:
        tracker = Tracker(
            "gpu-check", log_dir, components=["gpu"], gpus=[0], intensity=300.0, verbose=0
        )
        with tracker:
            tracker.epoch_start()
            time.sleep(1.5)  # calibrated
            tracked = _cpu_share(plan.cpu_s)
            tracker.epoch_end()
    return {
        "untracked_pct_core": round(idle * 100, 4),
        "tracked_pct_core": round(tracked * 100, 4),
        "follower_pct_core": round((tracked - idle) * 100, 4),
        "wakeup_cpu_us": round(_wakeup_cpu_us(), 1),
    }


def _cpu_share(seconds: float) -> float:
    cpu0, wall0 = time.process_time(), time.monotonic()
    time.sleep(seconds)
    return (time.process_time() - cpu0) / (time.monotonic() - wall0)


def _wakeup_cpu_us(wakeups: int = 20) -> float:
    started_s = time.thread_time()
    for _ in range(wakeups):
        time.sleep(0.1)
    return (time.thread_time() - started_s) / wakeups * 1e6


def hook_cost(board: Board, plan: Plan) -> dict[str, Any]:
    """Wall time of ``epoch_start``/``epoch_end`` over short busy epochs, sync auto, in ms, and
    of one ``torch.cuda.synchronize`` of the idle device, in us."""
    from tracker import Tracker

    times: dict[str, list[float]] = {"epoch_start": [], "epoch_end": []}
    with tempfile.TemporaryDirectory() as log_dir:
        tracker = Tracker(
            "gpu-check", log_dir, components=["gpu"], gpus=[0], intensity=300.0, verbose=0
        )
        with tracker:
            for _ in range(plan.hook_epochs):
                board.settle()
                t0 = time.perf_counter()
                tracker.epoch_start()
                times["epoch_start"].append((time.perf_counter() - t0) * 1e3)
                board.busy(0.05)
                t0 = time.perf_counter()
                tracker.epoch_end()
                times["epoch_end"].append((time.perf_counter() - t0) * 1e3)
    board.settle()
    sync_us = []
    cuda = sys.modules["torch"].cuda
    for _ in range(50):  # what sync adds to an edge when nothing is queued
        t0 = time.perf_counter()
        cuda.synchronize(0)
        sync_us.append((time.perf_counter() - t0) * 1e6)
    return {
        **{
            f"{hook}_{stat}_ms": round(how(values), 4)
            for hook, values in times.items()
            for stat, how in (("median", statistics.median), ("max", max))
        },
        "sync_idle_median_us": round(statistics.median(sync_us), 2),
    }


# -- output ---------------------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    """The figures as aligned text lines: section, figure, value."""
    lines = [f"gpu-check ({result['mode']}): {result['device']}, {result['date_utc']}"]
    for section in ("nvml", "accuracy", "follower_cpu", "hooks"):
        for key, value in _flat(result.get(section, {})):
            lines.append(f"  {section:<13} {key:<52} {_show(value)}")
    lines.append(f"  took {result.get('seconds', '?')} s")
    return "\n".join(lines)


def _flat(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            if key in ("epochs", "residual_ms_by_point"):
                continue
            yield from _flat(
                inner, f"{prefix}{key}." if isinstance(inner, dict) else f"{prefix}{key}"
            )
        return
    yield prefix.rstrip("."), value


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def _nvml_index_of_cuda0() -> int:
    """The NVML index of CUDA device 0: the first ``CUDA_VISIBLE_DEVICES`` entry, else 0."""
    from backends.gpu.nvidia import find_gpus

    found = find_gpus([0])
    index = None
    for meter in found.meters:
        for part in meter.info.detail.split():
            if part.startswith("nvml_index="):
                index = int(part.split("=", 1)[1])
        meter.close()
    return index if index is not None else 0


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
