"""``other``, the rest of a node, over random traces: never negative, and it closes the books.

Each example builds a Cray EX node (tests/fake_node.py) with RAPL (tests/fake_powercap.py) and
drives random per-epoch energies through the real discovery, sampler edges and epoch records:

- ``other`` is never below 0;
- where the node's meter measured at least what the components measured, the components plus
  ``other`` are exactly the node's energy (each joule counted once);
- where it measured less, ``other`` is 0, the IT energy is the components', and a warning says so.

The comparison is with what the node meter measured between the edges, not with the trace:
edge timing on a busy machine is the sampler's business (tests/measure/test_invariants.py).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backends.discover import discover
from tests.fake_node import FakePmCounters
from tests.fake_nvml import install_no_nvml
from tests.fake_powercap import FakeZone, build_powercap
from tracker.carbon.intensity import Constant
from tracker.carbon.pricing import Carbon
from tracker.measure.epochs import build_record
from tracker.measure.sampler import Sampler
from tracker.notices import Notices

JOULES = st.integers(min_value=0, max_value=5_000)
EPOCH = st.fixed_dictionaries(
    {"cpu": JOULES, "dram": JOULES, "accel0": JOULES, "accel1": JOULES, "rest": JOULES},
    optional={"shortfall": st.integers(min_value=1, max_value=5_000)},
)


@contextmanager
def cray_node(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[FakePmCounters, dict[str, FakeZone]]]:
    """A fresh node and RAPL tree for one example, the readers pointed at them."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        zones = build_powercap(root / "powercap", sockets=1)
        node = FakePmCounters(
            root / "sys", {"energy": 10**6, "accel0_energy": 10, "accel1_energy": 20}
        )
        with monkeypatch.context() as patch:
            patch.setenv("WATTPRINT_POWERCAP_ROOT", os.fspath(root / "powercap"))
            patch.setenv("WATTPRINT_SYSFS_ROOT", os.fspath(root / "sys"))
            yield node, zones


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(epochs=st.lists(EPOCH, min_size=1, max_size=6))
def test_other_is_never_negative_and_closes_the_books_with_the_node(
    monkeypatch: pytest.MonkeyPatch, epochs: list[dict[str, int]]
) -> None:
    install_no_nvml(monkeypatch)  # the GPUs come from accel0/accel1_energy
    with cray_node(monkeypatch) as (node, zones):
        found = discover()
        assert {m.info.device for m in found.meters} == {"gpu0", "gpu1", "cpu0", "dram0", "node"}
        notices = Notices(quiet=True)
        carbon = Carbon(Constant(100.0), 1.0, notices)
        sampler = Sampler(found.meters, carbon.co2_g, notices, 0.5, 1.0, lambda points: None)
        try:
            sampler.poll()  # the first reads (cold caches) may be slow: edges skip slow meters
            edge = sampler.snapshot()
            for number, trace in enumerate(epochs, 1):
                zones["cpu0"].add_energy_j(trace["cpu"])
                zones["dram0"].add_energy_j(trace["dram"])
                parts = trace["cpu"] + trace["dram"] + trace["accel0"] + trace["accel1"]
                spent_j = max(parts + trace["rest"] - trace.get("shortfall", 0), 0)
                node.add(
                    energy=spent_j, accel0_energy=trace["accel0"], accel1_energy=trace["accel1"]
                )
                sampler.poll()  # as the sampler thread would: keeps each meter's read cost fresh
                end = sampler.snapshot()
                record = build_record(
                    run_id="r", epoch=number, meters=found.meters, start=edge, end=end,
                    carbon=carbon, components=("gpu", "cpu", "dram", "other"), host="h",
                    rank=0, partial=False, notices=notices,
                )  # fmt: skip
                node_j = end[1]["node"].energy_j - edge[1]["node"].energy_j
                edge = end
                other = record.other_energy_j
                assert other is not None and other >= 0
                measured = sum(
                    e or 0.0
                    for e in (record.gpu_energy_j, record.cpu_energy_j, record.dram_energy_j)
                )
                if node_j >= measured:
                    assert measured + other == pytest.approx(node_j, abs=1e-6)
                    assert record.it_energy_j == pytest.approx(node_j, abs=1e-6)
                else:
                    assert other == 0.0 and record.it_energy_j == pytest.approx(measured)
                    assert any("measured" in m and "node" in m for m in notices.messages())
                assert record.co2_g is not None and record.co2_g >= 0
        finally:
            sampler.stop()
