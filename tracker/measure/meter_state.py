"""Per-meter state of the sampler, and the arithmetic of energy counters.

``MeterState`` is the handful of numbers kept per meter (memory does not grow with the run).
``counter_delta`` unwraps RAPL-style counters and bridges counter resets; ``wrap_safe_interval``
shortens the sampling period where a counter could wrap unseen between two reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from backends.base import Meter, expected_energy_j, unwrapped_j
from tracker.arguments import MIN_INTERVAL_S
from tracker.measure.follower import GridFollower
from tracker.measure.grid import ceiling_w
from tracker.notices import Notices

# gCO2e for `energy_j` joules spent between two monotonic times (PUE included).
CarbonFn = Callable[[float, float, float], float]

EDGE_READ_LIMIT_S = 0.01  # a read slower than this is never made on the training thread
_READS_PER_WRAP = 3  # reads per shortest wrap period of a counter: no wrap can go unseen


class MeterState:
    """The bounded per-meter state: last read, cumulative figures, peak, timeline anchor."""

    __slots__ = (
        "bound_j",
        "co2_g",
        "cut_co2_g",
        "cut_j",
        "energy_j",
        "failed_at_s",
        "follower",
        "meter",
        "peak_w",
        "power_w",
        "raw_j",
        "read_cost_s",
        "read_started_s",
        "reading_since",
        "t_s",
        "timeline_j",
        "timeline_t_s",
    )

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.t_s: float | None = None
        self.raw_j: float | None = None
        self.power_w: float | None = None
        self.energy_j = 0.0
        self.co2_g = 0.0
        self.bound_j = 0.0  # the error bound accumulated between reads (polled power), in J
        self.cut_j = -math.inf  # the highest cumulative figures a boundary has handed out
        self.cut_co2_g = -math.inf
        self.peak_w: float | None = None
        self.failed_at_s: float | None = None
        self.timeline_t_s = 0.0
        self.timeline_j = 0.0
        self.read_started_s = 0.0
        self.read_cost_s = 0.0  # how long the last read (or hint) of the meter took
        self.reading_since: float | None = None  # when a read now in progress began
        self.follower: GridFollower | None = None


def wrap_safe_interval(meters: Sequence[Meter], interval_s: float, notices: Notices) -> float:
    """The sampling period, shortened where a counter could wrap more than once between reads.

    A wrapping counter (RAPL, or the hardware register behind Intel GPU hwmon) read a whole
    range or more apart loses wraps that no later read can recover; at its hardware's maximum
    power it wraps every ``Meter.max_read_gap_s()`` s, so it is read at least
    ``_READS_PER_WRAP`` times in that span.
    """
    bounds = [(gap_s, m.info.device) for m in meters if (gap_s := m.max_read_gap_s()) is not None]
    if not bounds:
        return interval_s
    wrap_s, device = min(bounds)
    needed_s = wrap_s / _READS_PER_WRAP
    if needed_s >= interval_s:
        return interval_s
    shortened_s = max(needed_s, MIN_INTERVAL_S)
    impossible = needed_s < MIN_INTERVAL_S
    notices.warn(
        f"wrap:{device}",
        f"{device}'s counter can wrap every {wrap_s:.3g} s at its maximum power, faster than "
        f"the sampling interval allows; sampling every {shortened_s:.3g} s instead"
        + (
            ", which still cannot follow every wrap at full power: its energy may be low"
            if impossible
            else ""
        ),
    )
    return shortened_s


def counter_delta(state: MeterState, raw_j: float, dt: float, notices: Notices) -> float:
    """Energy between two counter reads, unwrapping RAPL-style counters and catching resets.

    What is inferred rather than read (extra wraps, a span across a reset) widens the meter's
    error bound (``state.bound_j``).
    """
    assert state.raw_j is not None
    delta_j = raw_j - state.raw_j
    wrap_j = state.meter.wrap_j
    device = state.meter.info.device
    expected_j = expected_energy_j(state.power_w, dt, state.meter.max_power_w)
    if wrap_j:
        delta_j, extra = unwrapped_j(delta_j, wrap_j, expected_j)
        if extra >= 1:
            state.bound_j += wrap_j  # one wrap more or fewer would fit the power as well
            notices.warn(
                f"multiwrap:{device}",
                f"{device}: the counter wrapped {extra + 1} times between two reads "
                f"{dt:.1f} s apart (sampler starved?); the extra wraps were inferred from "
                "the preceding power and may be inexact",
            )
    elif delta_j < 0:
        delta_j = expected_j if expected_j is not None else 0.0
        state.bound_j += max(delta_j, ceiling_w(state.meter, state.power_w) * dt - delta_j)
        notices.warn(
            f"reset:{device}",
            f"{device}: the energy counter went backwards (driver reload?); the {dt:.1f} s "
            "around it were estimated from the preceding power",
        )
    return delta_j


def may_read(state: MeterState, now_s: float) -> bool:
    """Whether an edge may read the meter on the training thread.

    Only while its last read was quick and no read of it has been in progress for longer than a
    quick read takes (a stuck driver).
    """
    since = state.reading_since
    quick = state.read_cost_s <= EDGE_READ_LIMIT_S
    return quick and (since is None or now_s - since <= EDGE_READ_LIMIT_S)


def followed(state: MeterState) -> bool:
    """Whether a follower thread reads this meter now (the sampler loop leaves it alone)."""
    return state.follower is not None and state.follower.locked


def signed_co2(carbon: CarbonFn, energy_j: float, a_s: float, b_s: float) -> float:
    """The gCO2e of ``energy_j`` (negative when it is taken back) spent between two times."""
    t0_s, t1_s = sorted((a_s, b_s))
    return math.copysign(carbon(abs(energy_j), t0_s, t1_s), energy_j)


def power_bound_j(
    state: MeterState, previous_w: float, now_w: float, dt: float, starved: bool
) -> float:
    """The most a trapezoid of two power readings ``dt`` apart can be off, in J.

    Power staying between the two readings: half their swing over the interval. Over a
    starved gap nothing is known of it: from nothing to the device's ceiling
    (``grid.ceiling_w``). A spike between two ordinary readings that neither shows is not
    bounded (a polled meter cannot see it).
    """
    trapezoid_j = (previous_w + now_w) / 2 * dt
    if starved:
        ceiling = ceiling_w(state.meter, previous_w, now_w)
        return max(trapezoid_j, ceiling * dt - trapezoid_j)
    return abs(now_w - previous_w) * dt / 2
