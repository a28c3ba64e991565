"""The HPE Cray EX pm_counters reader against fake node-controller trees (tests/fake_node.py)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from backends import sysfs
from backends.base import EVERY_OTHER_DEVICE, Meter, MeterReadError, MeterUnavailable
from backends.node.cray import UNREADABLE_FIX, find_pm_counters
from tests.fake_node import FakePmCounters
from tests.fake_powercap import honour_file_modes

NODE = {
    "energy": 900_000,
    "cpu_energy": 200_000,
    "memory_energy": 50_000,
    "accel0_energy": 150_000,
    "accel1_energy": 160_000,
}


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakePmCounters:
    monkeypatch.setenv("WATTPRINT_SYSFS_ROOT", str(tmp_path / "sys"))
    return FakePmCounters(tmp_path / "sys", NODE)


def by_device(meters: list[Meter]) -> dict[str, Meter]:
    return {m.info.device: m for m in meters}


def test_node_energy_is_other_less_every_device_and_the_parts_are_node_shares(
    node: FakePmCounters,
) -> None:
    found = find_pm_counters()
    meters = by_device(found.meters)
    assert set(meters) == {"node", "cpu", "dram", "gpu0", "gpu1"} and not found.missing
    whole = meters["node"].info
    assert (whole.component, whole.method, whole.minus) == ("other", "counter", ("*",))
    assert whole.minus == (EVERY_OTHER_DEVICE,) and whole.host_level
    assert "whole node" in whole.scope and whole.detail.endswith("pm_counters/energy")
    assert {m.info.method for d, m in meters.items() if d != "node"} == {"node-share"}
    assert meters["gpu1"].info.detail.endswith("accel1_energy")
    assert meters["gpu1"].info.scope.startswith("accelerator 1 of the node")
    assert (meters["dram"].info.component, meters["cpu"].info.component) == ("dram", "cpu")


def test_reading_is_the_counter_in_joules_and_follows_it_exactly(node: FakePmCounters) -> None:
    meter = by_device(find_pm_counters().meters)["node"]
    first = meter.read()
    node.add(energy=1234, cpu_energy=10)
    second = meter.read()
    assert first.energy_j is not None and second.energy_j is not None
    assert second.energy_j - first.energy_j == 1234 and second.t_s > first.t_s
    assert first.power_w is None and meter.fast and meter.wrap_j is None


def test_a_read_across_a_controller_refresh_is_retried_so_values_are_never_mixed(
    node: FakePmCounters, monkeypatch: pytest.MonkeyPatch
) -> None:
    meter = by_device(find_pm_counters().meters)["node"]
    real_read = sysfs.read_attribute
    refreshes = iter([True, False])  # the first value read is caught mid-refresh, then steady

    def refreshing_during_the_read(path: Path) -> str:
        text = real_read(path)
        if path.name == "energy" and next(refreshes, False):
            node.add(energy=500)  # freshness moves on between its two readings
        return text

    monkeypatch.setattr(sysfs, "read_attribute", refreshing_during_the_read)
    assert meter.read().energy_j == NODE["energy"] + 500  # the steady value, not the stale one


def test_freshness_that_never_holds_still_is_a_read_error(
    node: FakePmCounters, monkeypatch: pytest.MonkeyPatch
) -> None:
    meter = by_device(find_pm_counters().meters)["node"]
    real_read = sysfs.read_attribute

    def always_refreshing(path: Path) -> str:
        text = real_read(path)
        if path.name == "energy":
            node.add(energy=1)
        return text

    monkeypatch.setattr(sysfs, "read_attribute", always_refreshing)
    with pytest.raises(MeterReadError, match="freshness changed during each of 5 reads"):
        meter.read()


def test_controller_restart_keeps_the_counter_going_and_bridges_the_gap(
    node: FakePmCounters, caplog: pytest.LogCaptureFixture
) -> None:
    meter = by_device(find_pm_counters().meters)["node"]
    start = meter.read()
    time.sleep(0.3)
    node.add(energy=300)  # ~1 kW
    before = meter.read()
    node.restart(energy=7)  # counters start over; 7 J since the restart
    with caplog.at_level(logging.WARNING, logger="backends.node.cray"):
        bridged = meter.read()
    node.add(energy=250)
    after = meter.read()
    assert start.energy_j is not None and before.energy_j is not None
    assert bridged.energy_j is not None and after.energy_j is not None
    assert bridged.energy_j >= before.energy_j  # never backwards, never a jump of 900 kJ
    assert bridged.energy_j - before.energy_j < 50  # microseconds at ~1 kW
    assert after.energy_j - bridged.energy_j == 250  # exact again from the restart on
    assert "controller restarted" in caplog.text


def test_vanished_counter_raises_meter_unavailable_naming_the_file(node: FakePmCounters) -> None:
    meter = by_device(find_pm_counters().meters)["node"]
    node.path("energy").unlink()
    with pytest.raises(MeterUnavailable, match="pm_counters/energy"):
        meter.read()


@pytest.mark.parametrize("text", ["", "garbage\n", "12 W 1700 us\n", "-5 J 1 us\n"])
def test_garbage_or_a_power_unit_is_missing_at_discovery_and_a_read_error_later(
    node: FakePmCounters, text: str
) -> None:
    meter = by_device(find_pm_counters().meters)["node"]
    node.path("energy").write_text(text)
    with pytest.raises(MeterReadError):
        meter.read()
    found = find_pm_counters()
    assert "node" not in by_device(found.meters)
    (gap,) = [m for m in found.missing if m.device == "node"]
    assert gap.component == "other" and "pm_counters/energy" in gap.reason


def test_unreadable_counters_give_missing_with_the_fix(
    node: FakePmCounters, monkeypatch: pytest.MonkeyPatch
) -> None:
    node.path("energy").chmod(0)
    node.path("cpu_energy").chmod(0)
    honour_file_modes(monkeypatch)
    found = find_pm_counters()
    gaps = {m.device: m for m in found.missing}
    assert set(gaps) == {"node", "cpu"} and "node" not in by_device(found.meters)
    assert gaps["node"].fix == UNREADABLE_FIX and "0444" in UNREADABLE_FIX
    assert "Permission denied" in gaps["node"].reason or "permission" in gaps["node"].reason


def test_unlistable_directory_gives_one_missing_node_with_the_fix(
    node: FakePmCounters, monkeypatch: pytest.MonkeyPatch
) -> None:
    node.directory.chmod(0)
    honour_file_modes(monkeypatch)
    try:
        found = find_pm_counters()
    finally:
        node.directory.chmod(0o755)
    assert not found.meters
    assert [(m.component, m.device, m.fix) for m in found.missing] == [
        ("other", "node", UNREADABLE_FIX)
    ]


def test_no_pm_counters_directory_is_nothing_at_all(tmp_path: Path) -> None:
    found = find_pm_counters()  # conftest: an empty sysfs root
    assert not found.meters and not found.missing


def test_a_fifo_in_place_of_a_counter_never_blocks(node: FakePmCounters) -> None:
    import os

    node.path("memory_energy").unlink()
    os.mkfifo(node.path("memory_energy"))
    found = find_pm_counters()  # would hang forever on a blocking open
    assert "dram" not in by_device(found.meters)
    assert any(m.device == "dram" for m in found.missing)


def test_an_aggregate_beside_per_device_files_is_not_read_so_no_joule_counts_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATTPRINT_SYSFS_ROOT", str(tmp_path))
    FakePmCounters(
        tmp_path,
        {
            "energy": 900_000,
            "cpu_energy": 300_000,
            "cpu0_energy": 140_000,
            "cpu1_energy": 160_000,
            "accel_energy": 200_000,
            "accel0_energy": 200_000,
            "memory_energy": 50_000,
        },
    )
    found = find_pm_counters()
    try:
        assert sorted(by_device(found.meters)) == ["cpu0", "cpu1", "dram", "gpu0", "node"]
    finally:
        for meter in found.meters:
            meter.close()
