"""Time spent on the training thread by epoch hooks, and the sampler's CPU share.

With 8 simulated GPUs whose counter read costs 4 ms (as NVML's does on an H100), prints the median
and worst time of ``epoch_start()`` and ``epoch_end()`` (goal: median under 0.5 ms) and the CPU
seconds the tracker uses per wall second while the training thread sleeps (goal: under 0.2% of one
core at the default interval). Then the cost of a long run's bookkeeping: ``stop()`` and the
run.json rewrite after 1,000 to 8,000 epochs (goal: flat, i.e. a ratio near 1 between the
longest and the shortest run; it grew quadratically, 43 s after 8,000 epochs, before the
running totals).
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import tempfile
import time

from benchmarks.simulated import SlowCounterGPU
from tracker import Tracker


def hook_times(gpus: int, epochs: int, epoch_s: float) -> dict[str, list[float]]:
    """Wall time of each epoch_start/epoch_end call, in seconds."""
    times: dict[str, list[float]] = {"epoch_start": [], "epoch_end": []}
    meters = [SlowCounterGPU(i) for i in range(gpus)]
    with (
        tempfile.TemporaryDirectory() as log_dir,
        Tracker(
            "bench", log_dir, meters=meters, components=["gpu"], verbose=0, intensity=400.0
        ) as tracker,
    ):
        for _ in range(epochs):
            t0 = time.perf_counter()
            tracker.epoch_start()
            times["epoch_start"].append(time.perf_counter() - t0)
            time.sleep(epoch_s)
            t0 = time.perf_counter()
            tracker.epoch_end()
            times["epoch_end"].append(time.perf_counter() - t0)
    return times


def sampler_cpu_share(gpus: int, seconds: float, interval: float) -> float:
    """CPU seconds per wall second used by the process while only the sampler works."""
    meters = [SlowCounterGPU(i) for i in range(gpus)]
    with (
        tempfile.TemporaryDirectory() as log_dir,
        Tracker(
            "bench",
            log_dir,
            meters=meters,
            components=["gpu"],
            verbose=0,
            intensity=400.0,
            interval=interval,
        ),
    ):
        cpu0, wall0 = time.process_time(), time.monotonic()
        time.sleep(seconds)
        return (time.process_time() - cpu0) / (time.monotonic() - wall0)


def bookkeeping_cost(epochs: int) -> tuple[float, float]:
    """Seconds for ``stop()`` after ``epochs`` back-to-back epochs, and for one run.json write."""
    meters = [SlowCounterGPU(0, read_cost_s=0.0)]
    with tempfile.TemporaryDirectory() as log_dir:
        tracker = Tracker("bench", log_dir, meters=meters, components=["gpu"], verbose=0)
        with tracker:
            for _ in range(epochs):
                tracker.epoch_start()
                tracker.epoch_end()
            assert tracker._log is not None
            t0 = time.perf_counter()
            tracker._log.write_run_json()
            write_s = time.perf_counter() - t0
            t0 = time.perf_counter()
        return time.perf_counter() - t0, write_s


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--epoch-s", type=float, default=0.02)
    parser.add_argument("--cpu-seconds", type=float, default=10.0)
    parser.add_argument("--long-runs", type=int, nargs="+", default=[1000, 4000, 8000])
    args = parser.parse_args(argv)

    print(f"{args.gpus} simulated GPUs, counter read 4 ms each, {args.epochs} epochs")
    for hook, values in hook_times(args.gpus, args.epochs, args.epoch_s).items():
        ms = sorted(v * 1e3 for v in values)
        print(
            f"  {hook:<12} median {statistics.median(ms):.3f} ms  "
            f"p99 {ms[int(len(ms) * 0.99) - 1]:.3f} ms  max {ms[-1]:.3f} ms  (goal: median<0.5 ms)"
        )
    default_s = inspect.signature(Tracker).parameters["interval"].default
    for label, interval in (("default interval", default_s), ("interval 0.1 s", 0.1)):
        share = sampler_cpu_share(args.gpus, args.cpu_seconds, interval)
        print(
            f"  sampler CPU, {label:<16}: {share * 100:.3f}% of one core (goal at default < 0.2%)"
        )
    costs = {n: bookkeeping_cost(n) for n in args.long_runs}
    for n, (stop_s, write_s) in costs.items():
        print(
            f"  after {n:>6} epochs: stop() {stop_s * 1e3:.1f} ms, run.json {write_s * 1e3:.2f} ms"
        )
    (first_stop, first_write), (last_stop, last_write) = costs[min(costs)], costs[max(costs)]
    print(
        f"  longest/shortest run: stop() x{last_stop / first_stop:.2f}, "
        f"run.json x{last_write / first_write:.2f} (goal: flat, near x1)"
    )


if __name__ == "__main__":
    main()
