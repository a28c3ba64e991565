"""Estimates reported as cumulative energy counters, so that every interval is integrated exactly.

An estimate models power from something the meter can read at any instant: the time elapsed, or
the CPU time the machine has spent busy. Reported as joules since the meter was created, it is a
counter like any other to the sampler, which takes differences of reads: the first interval is
as exact as the rest, no state is kept per calling thread, and nothing has to be primed. A read
costs a clock read, plus ~20 us of ``/proc/stat`` for the CPU estimate (procfs, never blocking),
so estimates are ``fast``: read exactly at epoch edges on the training thread, with no follower
thread of their own.
"""

from __future__ import annotations

import abc
import math
import threading
import time

from backends.base import Meter, MeterInfo, Reading

__all__ = ["ConstantPowerMeter", "EstimateMeter", "checked_number", "checked_share"]


class EstimateMeter(Meter):
    """An estimated energy counter in J since creation: never decreasing, never wrapping.

    Subclasses give the model's energy up to an instant (``model_j``) and ``max_power_w``, the
    most power the model can give. A read reports the model clamped twice: never below the
    previous read (the model's inputs may jitter backwards), and never above the previous read
    plus ``max_power_w`` x the time since it (busy time is accounted in clock ticks, so a short
    interval could otherwise show more than the model's maximum; the excess is reported later,
    not lost).
    """

    fast = True  # a clock read (and /proc/stat for the CPU): cheap, exact, never blocking
    wrap_j = None
    max_power_w: float

    def __init__(self, info: MeterInfo, max_power_w: float) -> None:
        self.info = info
        self.max_power_w = max_power_w
        self.start_s = time.monotonic()
        self._lock = threading.Lock()
        self._t_s = self.start_s
        self._energy_j = 0.0

    @abc.abstractmethod
    def model_j(self, t_s: float) -> float:
        """The model's energy in J from ``start_s`` to ``t_s`` (a monotonic time, just read).

        Raises a ``MeterError`` subclass when an input of the model cannot be read.
        """

    def read(self) -> Reading:
        """Estimated energy in J since the meter was created, at the monotonic time of the read."""
        with self._lock:
            t_s = time.monotonic()
            ceiling_j = self._energy_j + self.max_power_w * max(t_s - self._t_s, 0.0)
            energy_j = min(max(self.model_j(t_s), self._energy_j), ceiling_j)
            self._t_s, self._energy_j = t_s, energy_j
        return Reading(t_s=t_s, energy_j=energy_j)


class ConstantPowerMeter(EstimateMeter):
    """A device estimated to draw ``power_w`` (W) at every moment: energy = power x time."""

    def __init__(self, info: MeterInfo, power_w: float) -> None:
        super().__init__(info, max_power_w=power_w)
        self.power_w = power_w

    def model_j(self, t_s: float) -> float:
        """``power_w`` x the seconds since the meter was created."""
        return self.power_w * (t_s - self.start_s)


def checked_number(name: str, value: object, unit: str, *, zero_ok: bool = False) -> float:
    """``value`` as a float if it is a finite number > 0 (>= 0 with ``zero_ok``) of ``unit``.

    The one check of an estimate's power figures (W, W/GB). Raises ``ValueError`` naming the
    argument ``name`` for anything else: a bool, a string, NaN, infinity, a value out of range.
    """
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not (value >= 0 if zero_ok else value > 0)
    ):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name} must be a finite number of {unit} {bound}, got {value!r}")
    return float(value)


def checked_share(name: str, value: object) -> float:
    """``value`` as a float if it is a number from 0 to 1 (a utilisation), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
    return float(value)
