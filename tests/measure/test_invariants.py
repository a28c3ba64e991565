"""Properties of the measuring core, over random meter mixes, power traces, edges and delays.

Each example builds a machine at the hardware boundary (simulated NVML GPUs, a powercap tree in a
temporary directory, the labelled estimates), then drives the sampler on a simulated clock: the
sampler's ticks come late or in bursts, epoch edges come in bursts or far apart (many shorter than
the sampling interval), meters vanish mid-run. Whatever happens, on every example:

- each meter's cumulative energy and gCO2e at the edges never decrease;
- every epoch's energies and gCO2e are >= 0 (or empty where nothing was measured);
- the epochs add up to the run's total, device by device and in the summary;
- a component with no working meter is empty (None), never 0;
- a RAPL counter read at the edges matches the energy the hardware spent, wraps included;
- a counter's epoch lies within its stated error bound of the truth; estimates have no bound.

Two more properties run the real Tracker, threads and all, on the real clock: estimates never
give a negative or lost epoch, and a followed Hopper-like counter stays within its bounds.
"""

from __future__ import annotations

import functools
import itertools
import math
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends import discover as discovery
from backends.base import COMPONENTS, Component
from backends.cpu.estimate import find_cpu_estimate
from tests.fake_nvml import (
    SimulatedGPU,
    hopper,
    install_fake_nvml,
    install_no_nvml,
    step_profile,
)
from tests.fake_powercap import FakeZone, build_powercap
from tracker import Tracker
from tracker.carbon.intensity import Constant
from tracker.carbon.pricing import Carbon
from tracker.measure.epochs import Totals, build_record, summarise
from tracker.measure.sampler import MeterSnapshot, Sampler
from tracker.notices import Notices
from tracker.records import EpochRecord

T0_S = 1000.0  # the simulated clock's start (monotonic seconds)
INTERVAL_S = 0.5
MAX_W = 400.0
MAX_GAP_S = 2.0
# Wide enough that no two reads are a whole range apart (what the counters' wraps need).
RANGE_UJ = int(4 * MAX_W * MAX_GAP_S * 1e6) * 3
TOLERANCE_J = 1e-4  # the counters' whole µJ and mJ, over a few reads


class Clock:
    """``time.monotonic`` for the example: moves only when the example says."""

    def __init__(self) -> None:
        self.now_s = T0_S

    def __call__(self) -> float:
        return self.now_s


@dataclass(frozen=True)
class Machine:
    """What one example's machine has: GPUs, RAPL sockets and their power traces."""

    gpus: list[SimulatedGPU]
    zones: dict[str, tuple[FakeZone, list[tuple[float, float]]]]  # device: zone, (start s, W)
    vanish: dict[str, float]  # device -> when its zone disappears
    components: tuple[Component, ...]


@dataclass(frozen=True)
class Event:
    """The clock moves ``dt_s``; then the sampler ticks, an edge is cut, or both."""

    dt_s: float
    tick: bool
    edge: bool


def trace(pairs: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """(held s, watts) pairs as (start time, watts) steps from ``T0_S``."""
    steps, start_s = [], T0_S
    for held_s, watts in pairs:
        steps.append((start_s, watts))
        start_s += held_s
    return steps


def traces(count: int) -> st.SearchStrategy[list[list[tuple[float, float]]]]:
    """``count`` piecewise-constant power traces: (start time, watts) steps."""
    step = st.tuples(st.floats(0.001, 3.0), st.floats(0.0, MAX_W))
    pairs = st.lists(step, min_size=1, max_size=6)
    return st.lists(pairs.map(trace), min_size=count, max_size=count)


events = st.lists(
    st.builds(
        Event,
        dt_s=st.one_of(
            st.floats(0.0, 0.02),  # bursts: edges microseconds to milliseconds apart
            st.floats(0.0, INTERVAL_S),  # epochs shorter than the interval
            st.floats(0.0, MAX_GAP_S),  # a starved sampler, long epochs
        ),
        tick=st.booleans(),
        edge=st.booleans(),
    ),
    min_size=2,
    max_size=40,
)


@st.composite
def machines(draw: st.DrawFn, root: Path) -> Machine:
    """A random meter mix: 0-2 GPUs (counter or power only), 0-2 RAPL sockets or estimates."""
    gpu_count, socket_count = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    gpus = []
    for steps in draw(traces(gpu_count)):
        lost = draw(st.one_of(st.none(), st.floats(0.0, 10.0)))
        gpus.append(
            SimulatedGPU(
                power_w=step_profile(steps),
                has_counter=draw(st.booleans()),
                fail_after_s=None if lost is None else T0_S + lost,
            )
        )
    zones = build_powercap(root, sockets=socket_count, max_energy_range_uj=RANGE_UJ)
    traced = {
        f"{kind}{s}": (zones[f"{kind}{s}"], steps)
        for s in range(socket_count)
        for kind, steps in zip(("cpu", "dram"), draw(traces(2)), strict=True)
    }
    vanish = {device: T0_S + draw(st.floats(0.0, 10.0)) for device in traced if draw(st.booleans())}
    components = draw(st.lists(st.sampled_from(COMPONENTS), min_size=1, unique=True))
    return Machine(gpus, traced, vanish, tuple(c for c in COMPONENTS if c in components))


def energy_between(steps: list[tuple[float, float]], t0_s: float, t1_s: float) -> float:
    """The energy of a step trace between two times (the first step also holds before it)."""
    profile = step_profile(steps)
    return profile.energy_j(t0_s, t1_s)


@contextmanager
def simulated(machine_root: Path) -> Iterator[tuple[pytest.MonkeyPatch, Clock]]:
    """The simulated clock in place of ``time.monotonic``, for the example's duration."""
    clock = Clock()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(time, "monotonic", clock)
        patch.setenv("WATTPRINT_POWERCAP_ROOT", str(machine_root))
        yield patch, clock


def run_core(
    machine: Machine, plan: list[Event], patch: pytest.MonkeyPatch, clock: Clock
) -> tuple[list[tuple[float, dict[str, MeterSnapshot]]], list[EpochRecord], Sampler]:
    """Drive discovery, the sampler and the epoch arithmetic through ``plan``."""
    if machine.gpus:
        install_fake_nvml(patch, machine.gpus)
    else:
        install_no_nvml(patch)
    # Without RAPL, a CPU estimate at a fixed utilisation: busy CPU time is not simulated.
    fixed = functools.partial(find_cpu_estimate, utilisation=0.5)
    patch.setattr(discovery, "find_cpu_estimate", fixed)
    found = discovery.discover(machine.components)
    notices = Notices(quiet=True)
    carbon = Carbon(Constant(300.0), 1.2, notices)
    sampler = Sampler(found.meters, carbon.co2_g, notices, INTERVAL_S, 1.0, lambda points: None)
    sampler.poll()  # the first reading, as start() takes it (its threads are not started here)
    cuts = [sampler.snapshot()]
    for event in plan:
        before_s, clock.now_s = clock.now_s, clock.now_s + event.dt_s
        for device, (zone, steps) in machine.zones.items():
            gone_s = machine.vanish.get(device)
            if gone_s is not None and clock.now_s >= gone_s and zone.path.exists():
                zone.remove()  # a package takes its DRAM zone with it
            if not zone.path.exists():
                continue
            zone.add_energy_j(energy_between(steps, before_s, clock.now_s))
        if event.tick:
            sampler.poll()
        if event.edge:
            cuts.append(sampler.snapshot())
    cuts.append(sampler.snapshot())
    records = [
        build_record(
            run_id="p",
            epoch=k + 1,
            meters=sampler.meters,
            start=start,
            end=end,
            carbon=carbon,
            components=machine.components,
            host="h",
            rank=0,
            partial=False,
        )
        for k, (start, end) in enumerate(itertools.pairwise(cuts))
    ]
    sampler.stop()
    return cuts, records, sampler


def assert_epochs_honest(records: list[EpochRecord], components: tuple[Component, ...]) -> None:
    """Every epoch >= 0 or empty, and the epochs add up to the summary."""
    for record in records:
        for device in record.devices:
            assert device.energy_j is None or device.energy_j >= 0, (record.epoch, device)
        for component in COMPONENTS:
            value = record.component_energy_j(component)
            assert value is None or value >= 0, (record.epoch, component, value)
            if component not in components:
                assert value is None
        for figure in (record.it_energy_j, record.facility_energy_kwh, record.co2_g):
            assert figure is None or figure >= 0, record
        if record.it_energy_j is None:  # nothing measured: empty, never a silent 0
            assert record.facility_energy_kwh is None and record.co2_g is None
    summary = summarise("p", "", Totals.of(records), "test")
    known = [r.it_energy_j for r in records if r.it_energy_j is not None]
    if known:
        assert summary.it_energy_j == pytest.approx(sum(known), rel=1e-9, abs=1e-9)
    else:
        assert summary.it_energy_j is None and summary.co2_g is None


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), plan=events)
def test_the_core_keeps_its_invariants_under_any_meters_traces_edges_and_delays(
    data: st.DataObject, plan: list[Event]
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory) / "powercap"
        machine = data.draw(machines(root))
        with simulated(root) as (patch, clock):
            cuts, records, sampler = run_core(machine, plan, patch, clock)

    devices = {m.info.device: m for m in sampler.meters}
    for device in devices:  # the cumulative curve at the edges never decreases
        energies = [cut[device].energy_j for _, cut in cuts]
        co2 = [cut[device].co2_g for _, cut in cuts]
        assert all(b >= a for a, b in itertools.pairwise(energies)), device
        assert all(b >= a for a, b in itertools.pairwise(co2)), device
    assert_epochs_honest(records, machine.components)

    for device, meter in devices.items():  # epochs add up to the span, device by device
        first = cuts[0][1][device]
        if first.failed_at_s is None:
            spent = [d.energy_j for r in records for d in r.devices if d.device == device]
            total = sum(e for e in spent if e is not None)
            assert total == pytest.approx(cuts[-1][1][device].energy_j - first.energy_j, abs=1e-6)
        if meter.info.method == "rapl" and cuts[-1][1][device].failed_at_s is None:
            steps = machine.zones[device][1]
            for boundary_s, cut in cuts:  # exact at every edge, wraps included
                truth_j = energy_between(steps, cuts[0][0], boundary_s)
                assert cut[device].energy_j - first.energy_j == pytest.approx(
                    truth_j, abs=TOLERANCE_J * len(plan) + 1e-6
                ), (device, boundary_s)

    for component in machine.components:  # no meter at all: empty in every epoch
        if not any(m.info.component == component for m in sampler.meters):
            assert all(r.component_energy_j(component) is None for r in records)

    assert_bounds_hold(machine, records, len(plan))


def assert_bounds_hold(machine: Machine, records: list[EpochRecord], reads: int) -> None:
    """A counter's epoch lies within its stated bound of the truth; estimates have none."""
    gpus = {f"gpu{i}": gpu for i, gpu in enumerate(machine.gpus)}
    for record in records:
        for device in record.devices:
            if device.method == "estimate":
                assert device.energy_bound_j is None
                continue
            if device.energy_j is not None:
                assert device.energy_bound_j is not None and device.energy_bound_j >= 0
            if device.method not in ("counter", "rapl") or device.energy_j is None:
                continue  # polled power: bounded only where it stays between its readings
            if device.device in gpus:
                truth_j = gpus[device.device].energy_j(record.start_s, record.end_s)
            else:
                truth_j = energy_between(
                    machine.zones[device.device][1], record.start_s, record.end_s
                )
            assert device.energy_bound_j is not None
            slack_j = TOLERANCE_J * reads + 2e-3  # two reads of a whole-mJ counter
            assert abs(device.energy_j - truth_j) <= device.energy_bound_j + slack_j, (
                record.epoch,
                device,
                truth_j,
            )
        bounds = [d.energy_bound_j for d in record.devices if d.energy_j is not None]
        if bounds and None not in bounds:
            assert record.it_energy_bound_j == pytest.approx(sum(b or 0.0 for b in bounds))
        else:
            assert record.it_energy_bound_j is None


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    epochs=st.lists(st.tuples(st.floats(0.0, 0.12), st.floats(0.0, 0.05)), min_size=1, max_size=12),
    busy=st.booleans(),
)
def test_a_real_tracker_on_estimates_never_logs_a_negative_or_lost_epoch(
    epochs: list[tuple[float, float]], busy: bool
) -> None:
    """The commonest machine (no GPU, no RAPL): estimates, real threads, epochs of any length."""
    with tempfile.TemporaryDirectory() as directory, pytest.MonkeyPatch.context() as patch:
        install_no_nvml(patch)
        patch.setenv("WATTPRINT_POWERCAP_ROOT", str(Path(directory) / "none"))
        tracker = Tracker("p", directory, interval=0.05, intensity=300.0, verbose=0)
        with tracker:
            for length_s, pause_s in epochs:
                with tracker.epoch():
                    until = time.monotonic() + length_s
                    while busy and time.monotonic() < until:
                        pass
                    time.sleep(0 if busy else length_s)
                time.sleep(pause_s)
        records = tracker.epochs
        assert len(records) == len(epochs)
        assert_epochs_honest(records, tracker.components)
        assert all(r.gpu_energy_j is None for r in records)  # no GPU: empty, not 0
        summary = tracker.summary
        assert summary.it_energy_j is not None and summary.it_energy_j > 0
        rows = (Path(tracker.run_dir) / "epochs.csv").read_text().splitlines()
        assert len(rows) == len(epochs) + 1


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(st.tuples(st.floats(0.005, 0.4), st.floats(0.0, 700.0)), min_size=1),
    epochs=st.lists(st.tuples(st.floats(0.0, 0.5), st.floats(0.0, 0.1)), min_size=1, max_size=6),
)
def test_a_followed_counters_epochs_lie_within_their_bounds_of_the_exact_energy(
    steps: list[tuple[float, float]], epochs: list[tuple[float, float]]
) -> None:
    """Real threads and clock, a Hopper-like GPU (100 ms counter steps, lagging instant power)."""
    start_s = time.monotonic()
    profile, gpu_steps, t_s = None, [], start_s - 10.0
    for held_s, watts in [(10.0, steps[0][1]), *steps]:  # repeats until the run is over
        gpu_steps.append((t_s, watts))
        t_s += held_s
    while t_s < start_s + 30.0:
        for held_s, watts in steps:
            gpu_steps.append((t_s, watts))
            t_s += held_s
    profile = step_profile(gpu_steps)
    gpu = hopper(profile)
    with tempfile.TemporaryDirectory() as directory, pytest.MonkeyPatch.context() as patch:
        install_fake_nvml(patch, [gpu])
        with Tracker("b", directory, components=["gpu"], intensity=300.0, verbose=0) as tracker:
            time.sleep(0.8)  # calibrated: the edges below are followed
            for epoch_s, gap_s in epochs:
                with tracker.epoch():
                    time.sleep(epoch_s)
                time.sleep(gap_s)
    for record in tracker.epochs[:-1] if len(tracker.epochs) > 1 else tracker.epochs:
        device = record.devices[0]
        assert device.energy_j is not None and device.energy_bound_j is not None
        truth_j = gpu.energy_j(record.start_s, record.end_s)
        assert abs(device.energy_j - truth_j) <= device.energy_bound_j + 2e-3, (record, truth_j)


def test_energy_of_a_trace_is_its_integral() -> None:
    """The test's own arithmetic: a 100 W step then 300 W, over 1 s each, is 400 J."""
    steps = [(T0_S, 100.0), (T0_S + 1.0, 300.0)]
    assert energy_between(steps, T0_S, T0_S + 2.0) == pytest.approx(400.0)
    assert math.isclose(energy_between(steps, T0_S - 1.0, T0_S), 100.0)
