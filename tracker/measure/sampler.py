"""Background sampling of meters into a cumulative energy and emissions figure per meter.

One daemon thread polls every meter each ``interval_s``. A counter meter contributes the
wrap-corrected difference of its counter; a power meter the trapezoid integral of its readings.
Each interval's energy is priced at once by the carbon function, so emissions follow
power x intensity over time.

Epoch boundaries are cut on the caller's thread by ``snapshot()`` without waiting on slow reads:
fast meters (RAPL files, NVML power) are read there and then. A slow energy counter (the NVML
counter, ~4 ms a read, updated every 100 ms on Hopper) is read by a ``GridFollower`` thread of its
own just after each update, so an edge takes the counter's value for its window, placed inside it
with the board's instant power; a counter without such a grid is completed from its last sampler
read plus the trapezoid of its cheap power hint over the remaining gap. Every cut also states how
far its figure can be from the truth (``MeterSnapshot.bound_j``, ``epoch_bound_j``; none for an
estimate), from how it was obtained. Successive snapshots lie on one cumulative curve, so epoch
figures add up exactly to the run's total, and that curve never decreases: a completed gap that a
later read shows to have been too high is held at the value already handed out until the measured
curve passes it (the excess is repaid by the next epochs, never taken back from a finished one, so
no epoch is ever negative). State per meter is a handful of numbers: memory does not grow.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from backends.base import MIN_RATE_SPAN_S, Meter, MeterError, Reading
from tracker.measure import grid
from tracker.measure.follower import GridFollower, safe_hint, safe_instant
from tracker.measure.grid import FollowBudget, ceiling_w
from tracker.measure.meter_state import (
    CarbonFn,
    MeterState,
    counter_delta,
    followed,
    may_read,
    power_bound_j,
    signed_co2,
    wrap_safe_interval,
)
from tracker.notices import Notices

logger = logging.getLogger(__name__)

# (monotonic time, device, average power since the previous point)
TimelinePoint = tuple[float, str, float]

_TIMELINE_FLUSH_ROWS = 512
_TIMELINE_FLUSH_S = 1.0  # samples.csv at most this far behind, for a live view of a long epoch
# A meter unread for this many intervals (and at least _STALE_MIN_S) was starved of the CPU/GIL.
_STALE_INTERVALS = 3
_STALE_MIN_S = 1.0


@dataclass(frozen=True, slots=True)
class MeterSnapshot:
    """A meter's cumulative figures at a boundary and its highest power since the previous one.

    Its error bounds give an epoch's (``epoch_bound_j`` of two snapshots).
    """

    energy_j: float
    co2_g: float
    peak_w: float | None
    failed_at_s: float | None
    # Error bounds in J (None: unbounded, an estimate): how far ``energy_j`` at this edge may be
    # from the truth, and the bound accumulated between reads since the start (polled power).
    bound_j: float | None = None
    interior_bound_j: float | None = None


class Sampler:
    """Polls meters on a daemon thread and cuts exact epoch boundaries on the caller's thread.

    ``on_timeline`` gets the power timeline in batches (at epoch edges, every few hundred rows
    and at stop) to write; ``on_power``, when given, gets each new timeline point within one
    ``interval_s``, on the sampler thread, for live views: it must return at once.
    """

    def __init__(
        self,
        meters: Sequence[Meter],
        carbon: CarbonFn,
        notices: Notices,
        interval_s: float,
        timeline_period_s: float,
        on_timeline: Callable[[list[TimelinePoint]], None],
        follow_budget: FollowBudget | None = None,
        *,
        on_power: Callable[[list[TimelinePoint]], None] | None = None,
    ) -> None:
        self._states = [MeterState(m) for m in meters]
        self._follow_budget = follow_budget or grid.BUDGET
        self._carbon = carbon
        self._notices = notices
        self._interval_s = wrap_safe_interval(meters, interval_s, notices)
        self._stale_s = max(_STALE_INTERVALS * self._interval_s, _STALE_MIN_S)
        self._timeline_period_s = timeline_period_s
        self._on_timeline = on_timeline
        self._timeline: list[TimelinePoint] = []
        self._flushed_s = time.monotonic()
        self._on_power = on_power
        self._fresh: list[TimelinePoint] = []  # timeline points not yet given to on_power
        self._jobs: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def meters(self) -> list[Meter]:
        """The meters sampled, in discovery order."""
        return [s.meter for s in self._states]

    def start(self) -> None:
        """Take the first reading of every meter; start the followers and the sampling thread."""
        self.poll()
        for state in self._states:  # slow counters (NVML's), read by a thread of their own
            if not state.meter.fast and state.raw_j is not None and state.failed_at_s is None:
                assert state.t_s is not None
                seed = ((state.read_started_s + state.t_s) / 2, state.raw_j)
                host = _FollowerHost(self, state)
                state.follower = GridFollower(state.meter, host, seed, self._follow_budget)
                state.follower.start()
        self._thread = threading.Thread(target=self._run, name="wattprint-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, run what is queued, hand over the timeline and close the meters."""
        self._stopping.set()
        self._wake.set()
        for state in self._states:
            if state.follower is not None:
                state.follower.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._run_jobs()
        with self._lock:  # the last, shorter timeline window of every meter
            for state in self._states:
                if state.t_s is not None and state.t_s > state.timeline_t_s:
                    self._add_timeline_point(state)
        self.flush_timeline()
        self._hand_over_power()
        for state in self._states:
            try:
                state.meter.close()
            except Exception as error:  # a driver failing at shutdown loses nothing measured
                device = state.meter.info.device
                self._notices.warn(f"close:{device}", f"closing {device} failed: {error}")

    def call_soon(self, job: Callable[[], None]) -> None:
        """Run ``job`` on the sampler thread at once (off the training thread)."""
        with self._lock:
            self._jobs.append(job)
        if self._thread is None or not self._thread.is_alive():
            self._run_jobs()
        else:
            self._wake.set()

    def poll(self) -> None:
        """Read every working meter once and fold the readings into the cumulative figures.

        Reads happen outside the lock, so an edge never waits for a read in progress here.
        """
        for state in self._states:
            if state.failed_at_s is not None or followed(state):
                continue
            reading, hint = self._read(state, hint=not state.meter.fast)
            if reading is not None:
                with self._lock:
                    if not followed(state):  # a follower may have locked on meanwhile
                        self._apply(state, reading, hint)
        due = time.monotonic() - self._flushed_s >= _TIMELINE_FLUSH_S
        if len(self._timeline) >= _TIMELINE_FLUSH_ROWS or (self._timeline and due):
            self.flush_timeline()
        self._hand_over_power()

    def snapshot(self) -> tuple[float, dict[str, MeterSnapshot]]:
        """Cut a boundary now: each meter's cumulative energy and CO2 at one monotonic instant.

        Runs on the caller's thread and never waits on a slow read: fast meters are read here and
        their reading is the boundary; slow ones are completed to the boundary from their last
        read (and read here too when the sampler thread has been starved of them, so counters
        stay exact). A meter whose last read was slow, or whose read is stuck, is not read here
        at all: it is completed from its last reading like a slow one, so a driver that stalls
        never stalls training. Resets the per-meter peaks.
        """
        now_s = time.monotonic()
        oldest_s = now_s - self._stale_s
        taken: dict[int, Reading] = {}
        hints: dict[int, float | None] = {}
        for state in self._states:
            if state.failed_at_s is not None or followed(state) or not may_read(state, now_s):
                continue
            stale = state.t_s is not None and state.t_s < oldest_s
            if state.meter.fast or stale:
                reading, hints[id(state)] = self._read(state, hint=not state.meter.fast)
                if reading is not None:
                    taken[id(state)] = reading
            else:
                hints[id(state)] = self._hint(state)
        boundary_s = time.monotonic()
        result: dict[str, MeterSnapshot] = {}
        with self._lock:
            for state in self._states:
                key = id(state)
                if key in taken:
                    self._apply(state, taken[key], hints.get(key))
                exact = key in taken and state.meter.fast
                hint_ok = may_read(state, boundary_s)
                cut = self._cut(state, boundary_s, hints.get(key), exact, hint_ok)
                result[state.meter.info.device] = cut
        return boundary_s, result

    # -- internals -------------------------------------------------------------------------------

    def _run(self) -> None:
        next_s = time.monotonic() + self._interval_s
        while not self._stopping.is_set():
            woken = self._wake.wait(max(0.0, next_s - time.monotonic()))
            if self._stopping.is_set():
                break
            if woken:
                self._wake.clear()
                self._run_jobs()
            now = time.monotonic()
            if now >= next_s:
                self.poll()
                # Skip ticks missed while starved rather than firing them in a burst.
                next_s += self._interval_s * max(1, int((now - next_s) / self._interval_s) + 1)

    def _run_jobs(self) -> None:
        with self._lock:
            jobs, self._jobs = self._jobs, []
        for job in jobs:
            try:
                job()
            except Exception as error:  # a failed log write must never end sampling
                self._notices.warn(
                    f"job:{type(error).__name__}", f"wattprint background task failed: {error!r}"
                )

    def flush_timeline(self) -> None:
        """Hand the buffered power timeline to ``on_timeline`` now (at epoch edges and stop).

        The sampler thread also hands it over once a second, so ``wattprint watch`` sees a long
        epoch's power as it goes.
        """
        with self._lock:
            points, self._timeline = self._timeline, []
            self._flushed_s = time.monotonic()
        if points:
            self._on_timeline(points)

    def _hand_over_power(self) -> None:
        """Give ``on_power`` the timeline points added since its last call (followers' too)."""
        if self._on_power is None:
            return
        with self._lock:
            points, self._fresh = self._fresh, []
        if points:
            self._on_power(points)

    def _read(self, state: MeterState, hint: bool) -> tuple[Reading | None, float | None]:
        """Read a meter (and its power hint), timing the read; a failure disables the meter."""
        state.read_started_s = state.reading_since = time.monotonic()
        try:
            reading = state.meter.read()
        except Exception as error:
            with self._lock:
                self._fail(state, error)
            return None, None
        finally:
            state.read_cost_s = time.monotonic() - state.read_started_s
            state.reading_since = None
        return reading, self._hint(state) if hint else None

    def _hint(self, state: MeterState) -> float | None:
        """A slow counter's cheap power figure, timed like a read (it is a driver call too)."""
        started_s = state.reading_since = time.monotonic()
        try:
            return safe_hint(state.meter)
        finally:
            state.read_cost_s = max(state.read_cost_s, time.monotonic() - started_s)
            state.reading_since = None

    def _fail(self, state: MeterState, error: Exception) -> None:
        """Stop reading a meter whose read raised, and say why.

        Either the hardware failed (a ``MeterError``) or the meter has a bug (anything else: said
        as such, with the traceback in the log).
        """
        info = state.meter.info
        state.failed_at_s = time.monotonic()
        where = f"{info.device} ({info.model}, {info.method})"
        if isinstance(error, MeterError):
            self._notices.warn(
                f"meter:{info.device}",
                f"{where} stopped working and is no longer measured: {error}",
            )
            return
        meter = type(state.meter).__qualname__
        if self._notices.warn(
            f"meter:{info.device}",
            f"{where} is no longer measured: bug in meter {meter} ({type(error).__name__}: "
            f"{error}); traceback in the log",
        ):
            logger.error("bug in meter %s reading %s", meter, info.device, exc_info=error)

    def _apply(self, state: MeterState, reading: Reading, hint_w: float | None) -> None:
        value = reading.energy_j if reading.energy_j is not None else reading.power_w
        if value is None or not math.isfinite(value) or value < 0:
            device = state.meter.info.device
            self._notices.warn(
                f"bad:{device}",
                f"{device} ({state.meter.info.model}) gave an impossible reading ({value!r}); "
                "such readings are skipped, and the span around them is taken from its neighbours",
            )
            return
        t_s = reading.t_s
        if state.t_s is None:
            state.t_s = t_s
            state.raw_j = reading.energy_j
            state.power_w = reading.power_w if reading.power_w is not None else hint_w
            state.timeline_t_s, state.timeline_j = t_s, 0.0
            return
        dt = t_s - state.t_s
        if dt <= 0:
            return
        if reading.energy_j is not None:
            delta_j = counter_delta(state, reading.energy_j, dt, self._notices)
            state.raw_j = reading.energy_j
            # Back-to-back boundary reads span microseconds: too short to say anything of power.
            if dt < MIN_RATE_SPAN_S and state.power_w is not None:
                rate_w = state.power_w
            else:
                rate_w = delta_j / dt
            now_w = hint_w if hint_w is not None else rate_w
            peak_w = rate_w
        else:
            now_w = reading.power_w if reading.power_w is not None else 0.0
            if dt > self._stale_s and state.meter.info.method == "power":
                self._notices.warn(
                    f"gap:{state.meter.info.device}",
                    f"{state.meter.info.device}: no power reading for {dt:.1f} s (the sampler "
                    "was starved, e.g. by a busy thread holding the GIL); the energy over such a "
                    "gap is interpolated between its two ends and may be inexact",
                )
            previous_w = state.power_w if state.power_w is not None else now_w
            delta_j = (previous_w + now_w) / 2 * dt
            peak_w = now_w
            state.bound_j += power_bound_j(state, previous_w, now_w, dt, dt > self._stale_s)
        state.energy_j += delta_j
        state.co2_g += self._carbon(delta_j, state.t_s, t_s)
        state.peak_w = peak_w if state.peak_w is None else max(state.peak_w, peak_w)
        state.t_s, state.power_w = t_s, now_w
        if t_s - state.timeline_t_s >= self._timeline_period_s:
            self._add_timeline_point(state)

    def _add_timeline_point(self, state: MeterState) -> None:
        """The meter's average power since its previous timeline point (never below 0 W)."""
        assert state.t_s is not None
        average_w = (state.energy_j - state.timeline_j) / (state.t_s - state.timeline_t_s)
        point = (state.t_s, state.meter.info.device, max(average_w, 0.0))
        self._timeline.append(point)
        if self._on_power is not None:
            self._fresh.append(point)
        state.timeline_t_s, state.timeline_j = state.t_s, state.energy_j

    def _cut(
        self,
        state: MeterState,
        boundary_s: float,
        hint_w: float | None,
        exact: bool,
        hint_ok: bool,
    ) -> MeterSnapshot:
        """The meter's cumulative figures at ``boundary_s``.

        Its reading there when ``exact``, else its followed counter's window, else its last
        reading completed over the gap; never below what an earlier boundary handed out.
        """
        energy_j, co2_g, bound_j = state.energy_j, state.co2_g, 0.0
        grid = state.follower
        if grid is not None and grid.locked and state.failed_at_s is None:
            hint_ok = hint_ok and not grid.stalled(boundary_s)
            edge = grid.edge(boundary_s, hint_ok)  # the counter's value for the edge's window
            energy_j += edge.energy_j
            co2_g += signed_co2(self._carbon, edge.energy_j, edge.from_s, boundary_s)
            bound_j = edge.bound_j
        elif (
            not exact
            and state.t_s is not None
            and state.power_w is not None
            and state.failed_at_s is None
        ):
            gap_s = boundary_s - state.t_s
            end_w = hint_w if hint_w is not None else state.power_w
            stale_s = grid.staleness_s if grid is not None else 0.0
            ceiling = ceiling_w(state.meter, state.power_w, end_w, state.peak_w)
            if gap_s > 0:  # slow meter: complete the gap since its last read
                tail_j = (state.power_w + end_w) / 2 * gap_s
                energy_j += tail_j
                co2_g += self._carbon(tail_j, state.t_s, boundary_s)
                peak = max(state.peak_w or 0.0, end_w)
                state.peak_w = peak
                # The truth since the last read lies between nothing and the ceiling, over the
                # gap and however old that read's value was (a counter between its updates).
                bound_j = max(tail_j, ceiling * (gap_s + stale_s) - tail_j)
            elif gap_s < 0:  # read a moment after the boundary: take back that moment
                back_j = state.power_w * -gap_s
                energy_j -= back_j
                co2_g -= self._carbon(back_j, boundary_s, state.t_s)
                bound_j = ceiling * (-gap_s + stale_s)
            if grid is not None:  # calibrating: corrected once the grid is known
                quick = hint_ok and not grid.stalled(boundary_s)
                instant_w = safe_instant(state.meter) if quick else None
                grid.note_edge(boundary_s, energy_j, instant_w)
        # Never below a value already handed out: the curve does not decrease (module docstring);
        # a figure held up so is off by the lift too.
        bound_j += max(state.cut_j - energy_j, 0.0)
        state.cut_j, state.cut_co2_g = max(energy_j, state.cut_j), max(co2_g, state.cut_co2_g)
        bounded = state.meter.info.method != "estimate"
        snap = MeterSnapshot(
            state.cut_j,
            state.cut_co2_g,
            state.peak_w,
            state.failed_at_s,
            bound_j if bounded else None,
            state.bound_j if bounded else None,
        )
        state.peak_w = None
        return snap


class _FollowerHost:
    """The sampler as one meter's follower sees it (``follower.Host``)."""

    def __init__(self, sampler: Sampler, state: MeterState) -> None:
        self.lock = sampler._lock
        self._sampler = sampler
        self._state = state

    def apply(self, reading: Reading, hint_w: float | None) -> None:
        last_s = self._state.t_s
        if last_s is not None and reading.t_s <= last_s:  # a window's time, just after a read
            reading = Reading(t_s=last_s + 1e-6, energy_j=reading.energy_j)
        self._sampler._apply(self._state, reading, hint_w)

    def cumulative_j(self, raw_j: float) -> float:
        assert self._state.raw_j is not None
        return self._state.energy_j - (self._state.raw_j - raw_j)

    def fail(self, error: Exception) -> None:
        if self._state.failed_at_s is None:  # the sampler may have found it failed first
            self._sampler._fail(self._state, error)

    def shift(self, energy_j: float, from_s: float) -> None:
        self._state.energy_j += energy_j
        now_s = time.monotonic()
        self._state.co2_g += signed_co2(self._sampler._carbon, energy_j, from_s, now_s)

    def warn(self, key: str, message: str) -> None:
        self._sampler._notices.warn(key, message)


def epoch_bound_j(start: MeterSnapshot, end: MeterSnapshot) -> float | None:
    """The most an epoch's energy between two snapshots can be off, in J; None when unbounded.

    Each edge's own bound plus what polling added between them.
    """
    parts = (start.bound_j, end.bound_j, start.interior_bound_j, end.interior_bound_j)
    if any(part is None for part in parts):
        return None
    assert start.bound_j is not None and end.bound_j is not None
    assert start.interior_bound_j is not None and end.interior_bound_j is not None
    return start.bound_j + end.bound_j + end.interior_bound_j - start.interior_bound_j
