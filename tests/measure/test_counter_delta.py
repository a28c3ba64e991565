"""Unwrapping a counter between two reads never claims more than the device can draw."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from backends.base import Meter, MeterInfo, Reading
from tracker.measure.meter_state import MeterState, counter_delta
from tracker.notices import Notices

WRAP_J = 30.0
MAX_W = 100.0


class WrappingCounter(Meter):
    """A RAPL-like zone: 30 J range, at most 100 W (wraps every 0.3 s at full power)."""

    info = MeterInfo("cpu0", "cpu", "package-0", "rapl", host_level=True)
    wrap_j = WRAP_J
    max_power_w = MAX_W

    def read(self) -> Reading:
        raise AssertionError("never read here")


@given(
    before_j=st.floats(0, WRAP_J, exclude_max=True),
    after_j=st.floats(0, WRAP_J, exclude_max=True),
    preceding_w=st.floats(0, 1e6),
    dt=st.floats(1e-3, 10.0),
)
def test_inferred_wraps_never_exceed_the_device_s_power(
    before_j: float, after_j: float, preceding_w: float, dt: float
) -> None:
    """A starved sampler after a noisy short read once inferred 30 wraps (986 J in 1 s at 100 W).

    A counter that reads lower than before has wrapped once at least, whatever the time; more
    wraps are inferred only as far as the device's power allows.
    """
    state = MeterState(WrappingCounter())
    state.raw_j, state.power_w = before_j, preceding_w
    delta_j = counter_delta(state, after_j, dt, Notices(quiet=True))
    assert 0 <= delta_j <= max(MAX_W * dt + WRAP_J / 2, WRAP_J)
