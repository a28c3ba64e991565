"""The update grid of a slow energy counter, and what following it may cost.

``fit_grid`` infers a counter's update period and its last update from the changes seen between
back-to-back reads; ``FollowBudget`` bounds the CPU one ``GridFollower`` may spend; ``ceiling_w``
is the power error bounds assume at worst.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass

from backends.base import Meter

MIN_PERIOD_S = 0.01
MAX_PERIOD_S = 1.0


@dataclass(frozen=True, slots=True)
class FollowBudget:
    """The CPU one follower may spend: ``share`` of one core, averaged over ``window_s``.

    1 % of a core per GPU: a window costs one read (~4 ms of waiting, a few tens of us of Python),
    so following normally costs 0.05-0.3 %; the budget leaves room for slow hosts while bounding
    eight GPUs to 8 % of one core at worst.
    """

    share: float = 0.01
    window_s: float = 10.0


BUDGET = FollowBudget()


def fit_grid(changes: list[tuple[float, float]]) -> tuple[float, float, float, float] | None:
    """The update period (low, high) and the last update (low, high) fitting every change seen.

    Each change lies between the midpoints of the last unchanged and the changed read.
    """
    if len(changes) < 3:
        return None
    centres = [(lo + hi) / 2 for lo, hi in changes]
    period_s = statistics.median(b - a for a, b in itertools.pairwise(centres))
    if not MIN_PERIOD_S <= period_s <= MAX_PERIOD_S:
        return None
    steps = [round((c - centres[0]) / period_s) for c in centres]
    if any(b - a != 1 for a, b in itertools.pairwise(steps)):
        return None
    p_lo, p_hi = 0.0, math.inf
    for (lo_i, hi_i), k_i in zip(changes, steps, strict=True):
        for (lo_j, hi_j), k_j in zip(changes, steps, strict=True):
            if k_j > k_i:
                p_lo = max(p_lo, (lo_j - hi_i) / (k_j - k_i))
                p_hi = min(p_hi, (hi_j - lo_i) / (k_j - k_i))
    if p_lo > p_hi:
        return None
    last = steps[-1]
    lo = max(lo_i + (last - k_i) * p_lo for (lo_i, _), k_i in zip(changes, steps, strict=True))
    hi = min(hi_i + (last - k_i) * p_hi for (_, hi_i), k_i in zip(changes, steps, strict=True))
    if lo > hi:
        return None
    return p_lo, p_hi, lo, hi


def ceiling_w(meter: Meter, *seen_w: float | None) -> float:
    """The most power the device can draw: its stated maximum or the highest power seen, in W.

    What error bounds assume a gap could have held at worst (``tracker.measure.sampler``).
    """
    return max([meter.max_power_w or 0.0, *(w for w in seen_w if w is not None)])
