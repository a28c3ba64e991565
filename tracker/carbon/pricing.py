"""Turns energy into gCO2e: energy x PUE x the grid intensity over the time the energy was used.

The sampler prices every interval as it is measured, so a changing intensity is weighted by the
power drawn while it held. Monotonic times are mapped to UTC with one offset taken at start, so
a wall-clock jump moves no label into another epoch's arithmetic.
"""

from __future__ import annotations

import math
import time

from tracker.carbon.intensity import IntensityArg, IntensitySource, resolve_intensity
from tracker.carbon.locations import Location, world
from tracker.notices import Notices
from tracker.units import J_PER_KWH


def validate_pue(pue: float) -> float:
    """``pue`` as a float: a power usage effectiveness, a finite number of at least 1.0.

    The one check of a PUE, for a run and an estimate alike; anything else (a bool, text, NaN, a
    value below 1.0) raises ``ValueError`` naming ``pue``.
    """
    if isinstance(pue, bool) or not isinstance(pue, int | float) or not math.isfinite(pue):
        raise ValueError(f"pue must be a number >= 1.0 (facility energy / IT energy), got {pue!r}")
    if pue < 1.0:
        raise ValueError(
            f"pue must be >= 1.0 (facility energy / IT energy; 1.0 means no overhead), got {pue}"
        )
    return float(pue)


class Carbon:
    """Prices energy spent between two monotonic times with an intensity source and a PUE."""

    def __init__(
        self,
        source: IntensitySource,
        pue: float,
        notices: Notices,
        fallback_g_per_kwh: float = math.nan,
    ) -> None:
        """Price with ``source`` and ``pue``, warning through ``notices`` when the source fails.

        ``fallback_g_per_kwh`` prices energy while ``source`` has not answered yet (the
        location's table value, or the world average); NaN leaves such energy unpriced.
        """
        self.source = source
        self._fallback_g_per_kwh = fallback_g_per_kwh
        self.pue = validate_pue(pue)
        self._notices = notices
        self._unix_offset_s = time.time() - time.monotonic()
        self._last_good_g_per_kwh: float | None = None

    @classmethod
    def for_run(
        cls,
        location: str | None,
        intensity: IntensityArg,
        pue: float | None,
        notices: Notices,
    ) -> tuple[Carbon, Location | None, list[str]]:
        """A run's pricing from the Tracker's arguments: the Carbon, the place, and warnings.

        ``pue`` defaults to the place's cloud figure, else 1.0; energy is priced at the place's
        table value (else the world average) while a live source has not answered yet.
        """
        source, place, warnings = resolve_intensity(location, intensity)
        default_pue = place.default_pue if place is not None and place.default_pue else 1.0
        table_g = (place or world()).g_per_kwh
        return cls(source, default_pue if pue is None else pue, notices, table_g), place, warnings

    def to_unix(self, monotonic_s: float) -> float:
        """The UTC (unix) time of a monotonic instant of this run."""
        return monotonic_s + self._unix_offset_s

    def intensity(self, start_s: float, end_s: float) -> float:
        """The time-weighted mean intensity (gCO2e/kWh) over a monotonic interval."""
        try:
            value = self.source.mean_g_per_kwh(self.to_unix(start_s), self.to_unix(end_s))
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"intensity source returned {value!r}")
        except Exception as error:  # the carbon module must never break the training loop
            last = self._last_good_g_per_kwh
            fallback = last if last is not None else self._fallback_g_per_kwh
            what = "the last good value" if last is not None else "the table value"
            self._notices.warn(
                "intensity",
                f"carbon intensity could not be read ({error}); using "
                + (f"{what} {fallback:g} g/kWh" if not math.isnan(fallback) else "NaN")
                + " until it can",
            )
            return fallback
        self._last_good_g_per_kwh = value
        return value

    def co2_g(self, energy_j: float, start_s: float, end_s: float) -> float:
        """gCO2e of ``energy_j`` IT joules spent between two monotonic times, PUE included."""
        if energy_j == 0.0:
            return 0.0
        return energy_j * self.pue / J_PER_KWH * self.intensity(start_s, end_s)
