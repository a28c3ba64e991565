"""Soak: a million simulated samples across 8 meters through a real Tracker.

    python -m benchmarks.soak [--samples 1000000] [--interval 0.5] [--epoch-s 600]
    python -m benchmarks soak [...]

Time is simulated so that 17 hours of sampling take a minute: a clock installed as
``time.monotonic`` moves one sampler interval (+-10% jitter) per poll, and this script polls the
tracker's sampler itself (the tracker's own thread is given an interval it never reaches, and only
runs the background jobs). Everything else is the code a long run executes: counter unwrapping of
two RAPL zones (wrapping dozens of times), four NVML-style energy counters completed at epoch
boundaries from their power hint, two power-only boards integrated by trapezoid, carbon priced per
interval from an hourly intensity series, the decimated power timeline appended to samples.csv,
and an epoch cut every ``--epoch-s`` simulated seconds with its CSV rows and run.json rewrite.

Prints the process's resident memory growth after warm-up (goal: under 5 MB) and, per meter, the
error of the run's energy (the sum of its epochs) against the exact simulated truth.
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from backends.base import Component, Meter, MeterInfo, Method, Reading
from tracker import EpochRecord, Tracker

INTEL_RANGE_UJ = 262_143_328_850  # max_energy_range_uj of an Intel package (unit 2^-14 J)
AMD_RANGE_UJ = 65_532_610_987  # of an AMD package (unit 2^-16 J)
IDLE_INTERVAL_S = 1e9  # the tracker thread's own interval: it never polls, the script does
WARMUP_SHARE = 0.02  # memory is compared from this share of the run on, after caches fill
GOAL_MB = 5.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000, help="meter reads in all")
    parser.add_argument("--interval", type=float, default=0.5, help="simulated sampler period, s")
    parser.add_argument("--epoch-s", type=float, default=600.0, help="simulated epoch length, s")
    args = parser.parse_args(argv)
    result = soak(args.samples, args.interval, args.epoch_s)
    print(result.report())
    return 0


@dataclass(frozen=True, slots=True)
class Profile:
    """Power of one simulated device: a level, a slow sine and a square wave (phases of work)."""

    base_w: float
    sine_w: float
    sine_period_s: float
    square_w: float
    square_period_s: float
    phase: float

    def power_w(self, t_s: float) -> float:
        angle = 2 * math.pi * t_s / self.sine_period_s + self.phase
        in_period = t_s % self.square_period_s
        square = 1.0 if in_period < self.square_period_s / 2 else -1.0
        return self.base_w + self.sine_w * math.sin(angle) + self.square_w * square

    def energy_j(self, t0_s: float, t1_s: float) -> float:
        """The exact integral of ``power_w`` over [t0_s, t1_s]."""
        return self._integral(t1_s) - self._integral(t0_s)

    def _integral(self, t_s: float) -> float:
        angle = 2 * math.pi * t_s / self.sine_period_s + self.phase
        sine = -self.sine_w * self.sine_period_s / (2 * math.pi) * math.cos(angle)
        in_period = t_s % self.square_period_s
        half = self.square_period_s / 2
        square = in_period if in_period < half else self.square_period_s - in_period
        return self.base_w * t_s + sine + self.square_w * square


class SimulatedClock:
    """Monotonic seconds that move only when told to."""

    def __init__(self, start_s: float) -> None:
        self.now_s = start_s

    def __call__(self) -> float:
        return self.now_s


class SoakMeter(Meter):
    """A device following a ``Profile``: a wrapping RAPL counter, an NVML counter or power only.

    ``reads`` counts the samples taken from it.
    """

    def __init__(
        self,
        device: str,
        component: Component,
        method: Method,
        profile: Profile,
        clock: Callable[[], float],
        range_uj: int | None = None,
    ) -> None:
        self.info = MeterInfo(device, component, "simulated", method, host_level=False)
        self.profile = profile
        self.fast = method != "counter"  # an NVML counter read costs ~4 ms: the sampler's job
        self.wrap_j = range_uj / 1e6 if range_uj is not None else None
        self.reads = 0
        self._range_uj = range_uj
        self._clock = clock
        self._origin_s = clock() - 3600.0  # counters started before the run

    def read(self) -> Reading:
        self.reads += 1
        t_s = self._clock()
        if self.info.method == "power":
            return Reading(t_s, power_w=self.profile.power_w(t_s))
        energy_j = self.profile.energy_j(self._origin_s, t_s)
        if self._range_uj is not None:  # RAPL: whole uJ, back to 0 after the range
            return Reading(t_s, energy_j=math.floor(energy_j * 1e6) % (self._range_uj + 1) / 1e6)
        return Reading(t_s, energy_j=math.floor(energy_j * 1e3) / 1e3)  # NVML: whole mJ

    def power_hint_w(self) -> float | None:
        return self.profile.power_w(self._clock()) if not self.fast else None


@dataclass(frozen=True, slots=True)
class MeterError:
    device: str
    method: str
    truth_j: float
    measured_j: float
    worst_epoch_rel: float

    @property
    def rel(self) -> float:
        return (self.measured_j - self.truth_j) / self.truth_j


@dataclass(frozen=True, slots=True)
class SoakResult:
    samples: int
    simulated_s: float
    epochs: int
    wall_s: float
    rss_warm_mb: float
    rss_end_mb: float
    rss_peak_mb: float
    errors: tuple[MeterError, ...]
    warnings: tuple[str, ...]

    def report(self) -> str:
        growth = self.rss_end_mb - self.rss_warm_mb
        lines = [
            f"soak: {self.samples:,} samples from {len(self.errors)} meters, "
            f"{self.simulated_s / 3600:.1f} simulated hours, {self.epochs} epochs, "
            f"{self.wall_s:.0f} s of wall time",
            f"  RSS after warm-up {self.rss_warm_mb:.1f} MB, at the end {self.rss_end_mb:.1f} MB, "
            f"peak {self.rss_peak_mb:.1f} MB: growth {growth:+.2f} MB (goal < {GOAL_MB:g} MB)",
            "  run energy against the simulated truth (sum of epochs):",
        ]
        for e in self.errors:
            lines.append(
                f"    {e.device:<6} {e.method:<8} truth {e.truth_j / 3.6e6:9.4f} kWh  "
                f"error {e.rel:+.2e}  worst epoch {e.worst_epoch_rel:.2e}"
            )
        lines.append(f"  warnings: {len(self.warnings)}")
        lines.extend(f"    {w}" for w in self.warnings)
        return "\n".join(lines)


def soak(samples: int, interval_s: float, epoch_s: float) -> SoakResult:
    """Drive ``samples`` reads through a Tracker under a simulated clock; measure what it costs."""
    clock = SimulatedClock(10_000.0)
    real_monotonic = time.monotonic
    time.monotonic = clock  # every module reads time.monotonic() through the time module
    try:
        with tempfile.TemporaryDirectory() as scratch:
            return _drive(clock, Path(scratch), samples, interval_s, epoch_s)
    finally:
        time.monotonic = real_monotonic


def _drive(
    clock: SimulatedClock, scratch: Path, samples: int, interval_s: float, epoch_s: float
) -> SoakResult:
    meters = _meters(clock)
    series = _intensity_series(scratch / "grid.csv", samples / len(meters) * interval_s)
    tracker = Tracker(
        "soak", scratch, meters=meters, intensity=series, interval=IDLE_INTERVAL_S, verbose=0
    )
    process = psutil.Process()
    jitter = random.Random(7)
    polls = math.ceil(samples / len(meters))
    warm_at = int(polls * WARMUP_SHARE)
    rss_warm = rss_peak = 0.0
    wall0 = time.perf_counter()
    tracker.start()
    sampler = tracker._sampler  # polled here, in simulated time, instead of by its thread
    assert sampler is not None
    tracker.epoch_start()
    epoch_started_s = clock.now_s
    for poll in range(polls):
        clock.now_s += interval_s * jitter.uniform(0.9, 1.1)
        sampler.poll()
        if clock.now_s - epoch_started_s >= epoch_s:
            tracker.epoch_end()
            tracker.epoch_start()
            epoch_started_s = clock.now_s
        if poll == warm_at or poll % 10_000 == 0:
            rss = process.memory_info().rss / 2**20
            rss_peak = max(rss_peak, rss)
            if poll == warm_at:
                gc.collect()
                rss_warm = process.memory_info().rss / 2**20
    tracker.epoch_end()
    gc.collect()
    rss_end = process.memory_info().rss / 2**20
    summary = tracker.stop()
    wall_s = time.perf_counter() - wall0
    epochs = tracker.epochs
    errors = tuple(_error(meter, epochs) for meter in meters)
    return SoakResult(
        samples=sum(m.reads for m in meters),
        simulated_s=epochs[-1].end_s - epochs[0].start_s,
        epochs=len(epochs),
        wall_s=wall_s,
        rss_warm_mb=rss_warm,
        rss_end_mb=rss_end,
        rss_peak_mb=max(rss_peak, rss_end),
        errors=errors,
        warnings=summary.warnings,
    )


def _meters(clock: SimulatedClock) -> list[SoakMeter]:
    shapes = random.Random(11)

    def profile(base_w: float) -> Profile:
        return Profile(
            base_w=base_w,
            sine_w=base_w * shapes.uniform(0.1, 0.3),
            sine_period_s=shapes.uniform(60.0, 300.0),
            square_w=base_w * shapes.uniform(0.05, 0.2),
            square_period_s=shapes.uniform(20.0, 120.0),
            phase=shapes.uniform(0.0, 2 * math.pi),
        )

    meters = [
        SoakMeter(f"gpu{i}", "gpu", "counter", profile(shapes.uniform(250, 600)), clock)
        for i in range(4)
    ]
    meters += [
        SoakMeter(f"gpu{i}", "gpu", "power", profile(shapes.uniform(150, 250)), clock)
        for i in (4, 5)
    ]
    meters.append(SoakMeter("cpu0", "cpu", "rapl", profile(150.0), clock, INTEL_RANGE_UJ))
    meters.append(SoakMeter("dram0", "dram", "rapl", profile(40.0), clock, AMD_RANGE_UJ // 8))
    return meters


def _intensity_series(path: Path, span_s: float) -> Path:
    """An hourly intensity series covering the whole simulated run."""
    start = int(time.time()) - 3600
    hours = range(int(span_s) // 3600 + 3)
    rows = [f"{start + 3600 * h},{300 + 80 * math.sin(h / 3):.1f}" for h in hours]
    path.write_text("unix_s,g_per_kwh\n" + "\n".join(rows) + "\n")
    return path


def _error(meter: SoakMeter, epochs: list[EpochRecord]) -> MeterError:
    """The meter's run energy (sum of its epochs) and worst epoch against the exact truth."""
    measured_j = 0.0
    worst = 0.0
    for record in epochs:
        (device,) = (d for d in record.devices if d.device == meter.info.device)
        energy_j = device.energy_j if device.energy_j is not None else math.nan
        truth_j = meter.profile.energy_j(record.start_s, record.end_s)
        measured_j += energy_j
        worst = max(worst, abs(energy_j - truth_j) / truth_j)
    truth_j = meter.profile.energy_j(epochs[0].start_s, epochs[-1].end_s)
    return MeterError(meter.info.device, meter.info.method, truth_j, measured_j, worst)


if __name__ == "__main__":
    raise SystemExit(main())
