"""The loads the benchmarks run: bursty epochs for accuracy and a small training loop for slowdown.

A bursty epoch alternates busy and idle stretches; its length (2-12 s), duty cycle and burst
period vary from epoch to epoch, drawn from a seeded generator so that every tool meets the same
sequence. The same plan drives either simulated boards (``SimLoad``: the power trace is set at
each edge) or real GPUs (``MatmulLoad``: torch matmuls while busy, sleep while idle).
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tests.fake_nvml import SimulatedGPU

IDLE_W = 90.0


@dataclass(frozen=True, slots=True)
class EpochPlan:
    """One epoch: its length, the share of each burst period spent busy, and that period."""

    duration_s: float
    duty: float
    period_s: float
    busy_w: float


def epoch_plans(count: int, shortest_s: float, longest_s: float, seed: int = 8) -> list[EpochPlan]:
    """``count`` epochs with length, duty cycle (0.2-1.0) and burst period (0.15-1.5 s) varying."""
    rng = random.Random(seed)
    return [
        EpochPlan(
            duration_s=rng.uniform(shortest_s, longest_s),
            duty=rng.choice((1.0, rng.uniform(0.2, 0.95))),
            period_s=rng.uniform(0.15, 1.5),
            busy_w=rng.uniform(450.0, 700.0),
        )
        for _ in range(count)
    ]


class Load(Protocol):
    """Something that can keep the GPUs busy or idle."""

    def busy(self, seconds: float, watts: float) -> None:
        """Work for ``seconds`` (drawing ``watts`` on simulated boards)."""

    def idle(self, seconds: float) -> None:
        """Do nothing on the GPUs for ``seconds``."""

    def settle(self) -> None:
        """Wait until the GPUs have finished what was queued (an epoch edge)."""


def run_epoch(plan: EpochPlan, load: Load) -> None:
    """Play one epoch on ``load``: bursts of work, ending busy as a last batch does."""
    end_s = time.monotonic() + plan.duration_s
    while (left_s := end_s - time.monotonic()) > 0:
        busy_s = min(plan.period_s * plan.duty, left_s)
        load.busy(busy_s, plan.busy_w)
        idle_s = min(plan.period_s * (1.0 - plan.duty), end_s - time.monotonic())
        if idle_s > 0.01 and end_s - time.monotonic() - idle_s > 0.05:
            load.idle(idle_s)
    load.settle()


class SimLoad:
    """Drives the power profiles of simulated boards; the calling thread just sleeps."""

    def __init__(self, gpus: Sequence[SimulatedGPU]) -> None:
        self.gpus = list(gpus)

    def busy(self, seconds: float, watts: float) -> None:
        for gpu in self.gpus:
            gpu.power_w.set(watts)
        time.sleep(seconds)

    def idle(self, seconds: float) -> None:
        for gpu in self.gpus:
            gpu.power_w.set(IDLE_W)
        time.sleep(seconds)

    def settle(self) -> None:
        for gpu in self.gpus:
            gpu.power_w.set(IDLE_W)


class MatmulLoad:
    """Keeps every visible CUDA device busy with bf16 matmuls; needs torch with CUDA."""

    def __init__(self, torch: Any, size: int = 8192) -> None:
        self._torch = torch
        self._operands = []
        for device in range(torch.cuda.device_count()):
            a = torch.randn(size, size, device=f"cuda:{device}", dtype=torch.bfloat16)
            self._operands.append((a, a.clone()))
        self.settle()

    def busy(self, seconds: float, watts: float) -> None:
        end_s = time.monotonic() + seconds
        while time.monotonic() < end_s:
            for a, b in self._operands:
                for _ in range(4):
                    _ = a @ b
            self._operands[0][0].sum().item()  # keep the queue short: edges stay sharp

    def idle(self, seconds: float) -> None:
        self.settle()
        time.sleep(seconds)

    def settle(self) -> None:
        for device in range(len(self._operands)):
            self._torch.cuda.synchronize(device)


class TrainingStep:
    """One step of a small MLP classifier (forward, backward, SGD) in numpy, or torch if present."""

    def __init__(self, width: int = 256, batch: int = 128, seed: int = 0) -> None:
        import numpy as np

        rng = np.random.default_rng(seed)
        self._np = np
        self.x = rng.standard_normal((batch, width)).astype(np.float32)
        self.y = rng.integers(0, 10, batch)
        self.w1 = (rng.standard_normal((width, width)) * 0.05).astype(np.float32)
        self.w2 = (rng.standard_normal((width, 10)) * 0.05).astype(np.float32)

    def __call__(self) -> None:
        np = self._np
        h = np.maximum(self.x @ self.w1, 0.0)
        logits = h @ self.w2
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(self.y)), self.y] -= 1.0
        grad_w2 = h.T @ p
        grad_h = (p @ self.w2.T) * (h > 0)
        grad_w1 = self.x.T @ grad_h
        self.w1 -= 1e-3 * grad_w1
        self.w2 -= 1e-3 * grad_w2
