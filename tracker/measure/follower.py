"""Grid following: a thread per slow energy counter reads it just after each of its updates.

On Hopper GPUs the NVML energy counter changes only every 100 ms and a read costs ~4 ms, so the
training thread never reads it. A ``GridFollower`` first calibrates: it reads back to back until
the value has changed a few times, and infers the counter's update period and phase. It then sleeps
until just after each predicted update and reads once per window, narrowing the phase from what it
sees (a read whose value has changed ends its window's update; one whose value has not starts it).
An epoch edge then takes the counter's own value for the window holding it, which is what a direct
read at that instant would return, plus the board's instant power times the time since that
window's update (placing the edge inside the step); an edge that falls after an update whose read
is not in yet extrapolates that one window. Each edge states its bound (``Edge.bound_j``). A
counter that changes on every read, or shows no regular grid, is left to the sampler's normal
reads, which also go on (alone) while the follower calibrates.

The value of a read is taken as of the middle of the call (the driver's round trip assumed
symmetric). The follower measures its own CPU time and stops following when it costs more than its
``FollowBudget``; a failed read goes through the sampler's failure path. State is a few numbers,
a calibration trace of at most a few seconds and a one-second ring of window energies.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from backends.base import Meter, Reading
from tracker.measure.grid import MAX_PERIOD_S, FollowBudget, ceiling_w, fit_grid

logger = logging.getLogger(__name__)


POWER_AVERAGE_S = 1.0  # Hopper's power reading is the mean of the last second

_CALIBRATION_CHANGES = 5
_CALIBRATION_LIMIT_S = (_CALIBRATION_CHANGES + 1) * MAX_PERIOD_S
_MIN_READ_GAP_S = 1e-3
_MAX_RELOCKS = 5  # grids lost (e.g. the thread starved) before following stops for good
_PROVISIONAL_WINDOWS = 100  # give up correcting a calibration edge after this many windows
_CONTINUOUS_READS = 8  # this many reads, nearly all changed: a counter without a grid
_FINE_S = 2e-4  # phase known this well: aim just after the update instead of bisecting
# With the instant power field an edge near an update is off by only that power times the phase
# error (0.7 J per ms at 700 W) instead of a window's energy: a coarser phase saves the second
# read per window that bisecting costs where wake-ups jitter.
_FINE_INSTANT_S = 2e-3
_MARGIN_S = 3e-4
_DRIFT = 2e-5  # allowance per window for the counter's clock drifting against ours
_ERROR_DECAY = 0.9
_STALLED_READ_S = 0.1  # an NVML counter read takes ~4 ms; one this long means a stuck driver


class Host(Protocol):
    """What a follower needs from the sampler; every call but ``lock`` is made holding ``lock``."""

    lock: threading.Lock

    def apply(self, reading: Reading, hint_w: float | None) -> None:
        """Fold a reading into the meter's figures."""

    def cumulative_j(self, raw_j: float) -> float:
        """The meter's cumulative energy when its counter read ``raw_j`` (no wrap since)."""

    def fail(self, error: Exception) -> None:
        """Mark the meter failed (the read raised)."""

    def shift(self, energy_j: float, from_s: float) -> None:
        """Add ``energy_j`` to the meter's cumulative figures from ``from_s`` on."""

    def warn(self, key: str, message: str) -> None:
        """Warn once per key, into the run's notices."""


@dataclass(frozen=True, slots=True)
class Edge:
    """Energy to add to a followed meter's cumulative figure at an edge, since when, and bound.

    ``bound_j``: the most the figure at the edge can be off by, in J.
    """

    energy_j: float
    from_s: float
    bound_j: float


class GridFollower:
    """One daemon thread that locks onto a counter's update grid and reads it once per window."""

    def __init__(self, meter: Meter, host: Host, seed: tuple[float, float], budget: FollowBudget):
        self.meter = meter
        self.locked = False  # the sampler leaves the meter to this thread while True
        self._host = host
        self._budget = budget
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._trace: list[tuple[float, float]] = [seed]  # (read midpoint, counter J)
        # (edge s, cumulative J reported, instant W there) of an edge cut while calibrating
        self._provisional: tuple[float, float, float | None] | None = None
        self._read_s = 0.0
        self._reading_since: float | None = None  # when the read now in progress began
        # Published under the host's lock for edges: the window held and what comes next.
        self._period_s = 0.0
        self._held_s = 0.0
        self._next_s = 0.0
        self._last_j = 0.0
        self._held_hint_w: float | None = None
        self._ring: deque[float] = deque()
        self._use_hint = False
        self._phase_s = 0.0  # half-width of the held update's time
        self._peak_w = 0.0  # the highest window power seen
        # How old a counter read's value may be: its update period once known, 0 for a counter
        # that changes on every read, at most MAX_PERIOD_S before either is known.
        self.staleness_s = MAX_PERIOD_S

    def start(self) -> None:
        """Start calibrating on a daemon thread."""
        name = f"wattprint-follow-{self.meter.info.device}"
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop following and wait for the thread (at most one read)."""
        self._stopping.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def note_edge(self, edge_s: float, energy_j: float, instant_w: float | None) -> None:
        """Remember an edge cut while calibrating, to correct it once the grid is known (locked).

        ``instant_w``: the board's instant power at the edge, to place it inside its window.
        """
        self._provisional = (edge_s, energy_j, instant_w)

    def stalled(self, now_s: float) -> bool:
        """Whether this follower's read has hung, so an edge must not call the driver for a hint.

        A counter read takes ~4 ms; one in progress for far longer means the driver is stuck.
        """
        since = self._reading_since
        return since is not None and now_s - since > _STALLED_READ_S

    def edge(self, edge_s: float, hint_ok: bool) -> Edge:
        """What to add at ``edge_s`` to the held value (called holding the host's lock).

        First the counter's own value at the edge: the held value before the next predicted
        update; after it, the windows whose reads are not in yet extrapolated (with the power
        hint, read only then). Then, where the board gives its instant power, the part of the
        edge's window before the edge: that power times the time since the window's update
        (never past the next update's value when the edge lies before the held one). An edge
        cut here ends any correction of an earlier calibration edge (it would move this one too).
        """
        if self._provisional is not None:
            self._trace, self._provisional = [], None
        instant_w = safe_instant(self.meter) if hint_ok else None
        if edge_s < self._held_s:  # the read of the edge's window landed before the cut
            windows = math.ceil((self._held_s - edge_s) / self._period_s)
            counter_j = -windows * self._last_j
            inside_j = within_step(instant_w, edge_s - (self._held_s - windows * self._period_s))
            energy_j = min(counter_j + inside_j, 0.0)
        elif edge_s < self._next_s:
            energy_j = within_step(instant_w, edge_s - self._held_s)
        else:
            windows = 1 + math.floor((edge_s - self._next_s) / self._period_s)
            first_j = self._last_j
            hint_w = safe_hint(self.meter) if hint_ok and self._use_hint and self._ring else None
            if hint_w is not None and self._held_hint_w is not None:
                first_j = POWER_AVERAGE_S * (hint_w - self._held_hint_w) + self._ring[0]
            since_s = edge_s - self._next_s - (windows - 1) * self._period_s
            energy_j = first_j + (windows - 1) * self._last_j + within_step(instant_w, since_s)
        return Edge(energy_j, self._held_s, self._bound(edge_s, energy_j, instant_w))

    def _bound(self, edge_s: float, energy_j: float, instant_w: float | None) -> float:
        """The most an edge placed ``energy_j`` from the held update can be off, in J.

        The truth lies between the held value and what the board could draw at most (its power
        limit, or the highest power seen) over the time from the held update to the edge; the
        update's own time is known to its phase's half-width, and the read's value is taken
        mid-call, off by up to half a read if the driver takes it elsewhere.
        """
        ceiling = ceiling_w(self.meter, instant_w, self._peak_w)
        span_j = ceiling * abs(edge_s - self._held_s)
        low_j, high_j = (0.0, span_j) if edge_s >= self._held_s else (-span_j, 0.0)
        doubt_j = ceiling * (self._phase_s + self._read_s / 2)
        return max(energy_j - low_j, high_j - energy_j) + doubt_j

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        self._cpu0_s, self._wall0_s = time.thread_time(), time.monotonic()
        try:
            for _ in range(_MAX_RELOCKS):
                grid = self._calibrate()
                if grid is None or self._stopping.is_set():
                    return
                self._follow(*grid)
                if self._stopping.is_set():
                    return
                with self._host.lock:
                    self.locked = False
                logger.debug("%s: lost the counter's update grid; calibrating again", self._device)
            self._give_up(
                "lost",
                "lost its counter's update grid repeatedly (starved?); its "
                "edges are completed from the sampler's reads",
            )
        except _Released:
            pass
        finally:
            with self._host.lock:
                self.locked = False
                self._trace = []

    def _read(self, hint: bool) -> tuple[float, Reading, float | None]:
        """One read: its midpoint, the reading and the hint if asked; failing ends following."""
        started_s = self._reading_since = time.monotonic()
        try:
            reading = self.meter.read()
            hint_w = safe_hint(self.meter) if hint else None
        except Exception as error:  # any driver failure: the sampler's one failure path
            with self._host.lock:
                self._host.fail(error)
            raise _Released from error
        finally:
            self._reading_since = None
        took_s = reading.t_s - started_s
        self._read_s = took_s if self._read_s == 0.0 else 0.8 * self._read_s + 0.2 * took_s
        self._check_budget()
        return (started_s + reading.t_s) / 2, reading, hint_w

    def _check_budget(self) -> None:
        wall_s = time.monotonic() - self._wall0_s
        if wall_s < self._budget.window_s:
            return
        share = (time.thread_time() - self._cpu0_s) / wall_s
        if share > self._budget.share:
            self._give_up(
                "budget",
                f"following its counter's update grid used {share:.2%} of a core (budget "
                f"{self._budget.share:.2%}); its edges are completed from the sampler's reads",
            )
        self._cpu0_s, self._wall0_s = time.thread_time(), time.monotonic()

    def _give_up(self, cause: str, why: str) -> None:
        device = self.meter.info.device
        with self._host.lock:
            self._host.warn(f"follow-{cause}:{device}", f"{device}: {why}")
        raise _Released

    def _calibrate(self) -> tuple[float, float, float, float, float, float] | None:
        """Read back to back until the value has changed a few times; infer the grid.

        Returns (update period low, high, last update low, high, value after it, the energy of
        the last window), or None for a counter without a regular grid (left to the sampler).
        """
        changes: list[tuple[float, float]] = []
        previous_m, previous_j, delta_j = 0.0, None, 0.0
        started_s, reads, changed = time.monotonic(), 0, 0
        changed_s = started_s
        while len(changes) < _CALIBRATION_CHANGES and not self._stopping.is_set():
            if self._read_s < _MIN_READ_GAP_S and self._stopping.wait(_MIN_READ_GAP_S):
                return None  # a cheap read: calibrating must not spin
            m, reading, _ = self._read(hint=False)
            value = reading.energy_j
            if value is not None:
                self._trace.append((m, value))
            if previous_j is not None and value is not None and value != previous_j:
                changes.append((previous_m, m))
                changed, delta_j, changed_s = changed + 1, value - previous_j, m
            previous_m, previous_j, reads = m, value, reads + 1
            if reads >= _CONTINUOUS_READS and changed >= reads - 2:
                logger.debug("%s: counter changes on every read; not followed", self._device)
                self.staleness_s = 0.0
                return None
            now_s = time.monotonic()
            if now_s - started_s > _CALIBRATION_LIMIT_S or now_s - changed_s > 2 * MAX_PERIOD_S:
                logger.debug("%s: no regular update grid; not followed", self._device)
                return None
        if self._stopping.is_set():
            return None
        grid = fit_grid(changes)
        if grid is None or grid[1] * 0.25 < self._read_s or previous_j is None:
            logger.debug("%s: no regular update grid; not followed", self._device)
            return None
        return (*grid, previous_j, delta_j)

    def _follow(
        self, p_lo: float, p_hi: float, lo: float, hi: float, value_j: float, delta_j: float
    ) -> None:
        """Read once per window, just after its predicted update, and keep the phase narrow.

        Returns when the grid is lost (the thread starved, or the counter stopped keeping time).
        """
        anchor_lo, anchor_hi, n, windows, last_m = lo, hi, 0, 0, hi
        self._ring = deque(maxlen=max(1, round(POWER_AVERAGE_S / ((p_lo + p_hi) / 2))))
        errors = [0.0, math.inf]  # recent |error| of (previous window, power-average identity)
        hint_before: float | None = None
        # The hint's only use per window is to extrapolate windows not read yet; a board with the
        # instant power field places such edges with it, so the hint read is saved (CPU).
        hint_each_window = safe_instant(self.meter) is None
        fine_s = _FINE_S if hint_each_window else _FINE_INSTANT_S
        self._publish(lo, hi, (p_lo + p_hi) / 2, None, value_j, delta_j)
        with self._host.lock:
            self._correct_provisional(lo, hi, p_lo, p_hi)
        while not self._stopping.is_set():
            period_s = (p_lo + p_hi) / 2
            next_lo = max(lo + p_lo, anchor_lo + (n + 1) * p_lo) - _DRIFT * period_s
            next_hi = min(hi + p_hi, anchor_hi + (n + 1) * p_hi) + _DRIFT * period_s
            if next_lo > next_hi:  # the grid moved: start the phase over from the last window
                anchor_lo, anchor_hi, n = lo, hi, 0
                next_lo, next_hi = lo + p_lo - self._read_s, hi + p_hi + self._read_s
            aim_s = (next_lo + next_hi) / 2 if next_hi - next_lo > fine_s else next_hi + _MARGIN_S
            if self._stopping.wait(max(0.0, aim_s - self._read_s / 2 - time.monotonic())):
                return
            if time.monotonic() > next_hi + period_s / 2:  # starved: windows went by unread
                return
            seen_lo = last_m
            while True:
                m, reading, hint_w = self._read(hint_each_window)
                new_j = reading.energy_j
                if new_j is None or m > next_hi + period_s / 2:
                    return
                if new_j != value_j:
                    break
                seen_lo = m
            last_m = m
            next_lo, next_hi = max(next_lo, seen_lo), min(next_hi, m)
            if next_lo > next_hi:  # not where predicted: keep only what this window showed
                next_lo, next_hi, anchor_lo, anchor_hi, n = seen_lo, m, seen_lo, m, -1
            lo, hi, n = next_lo, next_hi, n + 1
            if n > 0:  # refine the period from the anchor's baseline
                p_lo = max(p_lo, (lo - anchor_hi) / n)
                p_hi = min(p_hi, (hi - anchor_lo) / n)
                if p_lo > p_hi:
                    p_lo = p_hi = (hi + lo - anchor_hi - anchor_lo) / (2 * n)
                if 2 * (hi - lo) < anchor_hi - anchor_lo:
                    anchor_lo, anchor_hi, n = lo, hi, 0
            delta_j = new_j - value_j
            errors = self._score(errors, delta_j, hint_w, hint_before)
            hint_before, value_j, windows = hint_w, new_j, windows + 1
            self._publish(lo, hi, (p_lo + p_hi) / 2, hint_w, new_j, delta_j, errors)
            if self._trace and windows >= _PROVISIONAL_WINDOWS:
                self._trace, self._provisional = [], None
            elif self._trace:
                with self._host.lock:
                    self._correct_provisional(lo, hi, p_lo, p_hi)

    def _score(
        self, errors: list[float], delta_j: float, hint_w: float | None, before_w: float | None
    ) -> list[float]:
        """Track how well each predictor of a window's energy would have done on this one."""
        previous = abs(delta_j - self._last_j)
        identity = math.inf
        if hint_w is not None and before_w is not None and len(self._ring) == self._ring.maxlen:
            identity = abs(delta_j - (POWER_AVERAGE_S * (hint_w - before_w) + self._ring[0]))
        return [
            _ERROR_DECAY * e + (1 - _ERROR_DECAY) * x
            for e, x in zip(errors, (previous, identity), strict=True)
        ]

    def _publish(
        self,
        lo: float,
        hi: float,
        period_s: float,
        hint_w: float | None,
        value_j: float,
        delta_j: float,
        errors: list[float] | None = None,
    ) -> None:
        """Apply a window's value, as of its update, and what edges need, under the host's lock."""
        held_s = (lo + hi) / 2
        with self._host.lock:
            self._host.apply(Reading(t_s=held_s, energy_j=value_j), hint_w)
            self._ring.append(delta_j)
            self._last_j = delta_j
            self._use_hint = errors is not None and errors[1] < errors[0]
            self._period_s, self._held_s, self._next_s = period_s, held_s, held_s + period_s
            self._phase_s, self.staleness_s = (hi - lo) / 2, period_s
            self._peak_w = max(self._peak_w, delta_j / period_s)
            self._held_hint_w = hint_w
            self.locked = True

    def _correct_provisional(self, lo: float, hi: float, p_lo: float, p_hi: float) -> None:
        """Shift the curve so that the last edge cut while calibrating reads its window's value.

        Called holding the host's lock after each window: the calibration reads (back to back)
        hold the counter's value for every window they spanned; once the grid is known well enough
        to say which window held the edge, the read inside that window gives the edge's value.
        """
        if self._provisional is None:
            return
        edge_s, reported_j, instant_w = self._provisional
        period_s, update_s = (p_lo + p_hi) / 2, (lo + hi) / 2
        back = math.floor((edge_s - update_s) / period_s)
        start_s = update_s + back * period_s
        doubt_s = (hi - lo) / 2 + abs(back) * (p_hi - p_lo) / 2 + _FINE_S
        if doubt_s > period_s / 4 or not start_s + doubt_s < edge_s < start_s + period_s - doubt_s:
            return  # not yet sure which window holds the edge
        for m, raw_j in self._trace:
            if start_s + doubt_s < m < start_s + period_s - doubt_s:
                at_edge_j = self._host.cumulative_j(raw_j) + within_step(
                    instant_w, edge_s - start_s
                )
                self._host.shift(reported_j - at_edge_j, edge_s)
                break
        self._trace, self._provisional = [], None

    @property
    def _device(self) -> str:
        return self.meter.info.device


class _Released(Exception):
    """Ends the follower's thread; the meter goes back to the sampler."""


def safe_hint(meter: Meter) -> float | None:
    """A meter's power hint, or None when it has none or cannot give it now."""
    try:
        return meter.power_hint_w()
    except Exception:  # a hint is optional; the counter read reports real failures
        return None


def safe_instant(meter: Meter) -> float | None:
    """A meter's instant power, or None when it has none or cannot give it now."""
    try:
        return meter.instant_power_w()
    except Exception:  # optional, like the hint: an edge then keeps the counter's own value
        return None


def within_step(instant_w: float | None, since_update_s: float) -> float:
    """The energy since a counter's update, from the instant power then (0 without it), in J.

    The counter's next update makes the curve exact again; a slightly high figure here is held
    by the sampler's floor until the counter passes it, so no epoch goes negative.
    """
    if instant_w is None or not math.isfinite(instant_w) or instant_w < 0:
        return 0.0
    return instant_w * max(since_update_s, 0.0)
