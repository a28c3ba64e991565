"""Apple Silicon through a fake ``zeus_apple_silicon`` module on a patched ``sys.platform``."""

from __future__ import annotations

import sys
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backends.base import MeterReadError
from backends.discover import discover
from backends.soc.apple import DETAIL, INSTALL_FIX, find_apple_silicon
from tests.fake_nvml import StepProfile, install_no_nvml, step_profile
from tracker import DeviceEnergy, EpochRecord, Tracker
from tracker.cli.main import main

FIELDS = ("cpu_total_mj", "gpu_mj", "ane_mj", "dram_mj")
STOPPED = "stopped working"


@dataclass
class FakeChip:
    """An M-series chip's energy model: each field's power, counted in whole mJ as the library's.

    ``fail`` makes every call raise from then on; ``absent`` fields are None.
    """

    power_w: dict[str, StepProfile]
    absent: set[str] = field(default_factory=set)
    fail: bool = False
    start_fails: bool = False

    def metrics(self) -> types.SimpleNamespace:
        if self.fail:
            raise RuntimeError("IOReport subscription lost")
        now_s = time.monotonic()
        values = {
            name: None if name in self.absent else int(p.energy_j(0.0, now_s) * 1000)
            for name, p in self.power_w.items()
        }
        return types.SimpleNamespace(gpu_sram_mj=7, **values)


def install(monkeypatch: pytest.MonkeyPatch, chip: FakeChip | None) -> None:
    """macOS, with the fake package (``chip``) or without it (None)."""
    monkeypatch.setattr(sys, "platform", "darwin")
    install_no_nvml(monkeypatch)
    if chip is None:
        monkeypatch.setitem(sys.modules, "zeus_apple_silicon", None)  # import fails
        return
    model = chip

    class AppleEnergyMonitor:
        def __init__(self) -> None:
            if model.start_fails:
                raise RuntimeError("no IOReport energy model")

        def get_cumulative_energy(self) -> types.SimpleNamespace:
            return model.metrics()

    module = types.ModuleType("zeus_apple_silicon")
    module.AppleEnergyMonitor = AppleEnergyMonitor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "zeus_apple_silicon", module)


def chip(**watts: float) -> FakeChip:
    defaults = {"cpu_total_mj": 9.0, "gpu_mj": 21.0, "ane_mj": 6.0, "dram_mj": 3.0}
    return FakeChip({name: step_profile([(0.0, w)]) for name, w in (defaults | watts).items()})


def device(record: EpochRecord, name: str) -> DeviceEnergy:
    return next(d for d in record.devices if d.device == name)


def test_other_systems_look_for_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "zeus_apple_silicon", None)
    found = find_apple_silicon()  # sys.platform is linux here
    assert not found.meters and not found.missing


def test_cpu_gpu_ane_and_dram_are_model_based_counters_with_the_ane_an_accelerator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install(monkeypatch, chip())

    found = find_apple_silicon()

    infos = [m.info for m in found.meters]
    assert [(i.device, i.component, i.method) for i in infos] == [
        ("cpu0", "cpu", "counter"),
        ("gpu0", "gpu", "counter"),
        ("ane0", "gpu", "counter"),
        ("dram0", "dram", "counter"),
    ]
    assert all(i.detail == DETAIL and "model-based" in i.detail for i in infos)
    assert all(i.host_level for i in infos) and not found.missing


def test_a_reading_is_the_field_in_joules(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = chip()
    install(monkeypatch, fake)
    gpu = find_apple_silicon().meters[1]
    before = time.monotonic()
    reading = gpu.read()
    assert reading.energy_j == pytest.approx(21.0 * reading.t_s, abs=0.002 + 21 * 1e-3)
    assert reading.t_s >= before


def test_without_the_package_cpu_and_dram_are_estimated_and_the_fix_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, None)

    found = discover()

    assert sorted((m.info.device, m.info.method) for m in found.meters) == [
        ("cpu", "estimate"),
        ("dram", "estimate"),
    ]
    apple = [m for m in found.missing if m.fix == INSTALL_FIX]
    assert sorted(m.component for m in apple) == ["cpu", "dram", "gpu"]
    assert "pip install 'wattprint[apple]'" in INSTALL_FIX
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "cpu   estimated" in out and "fix: pip install 'wattprint[apple]'" in out


def test_discovery_uses_the_chip_and_adds_no_estimate(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    install(monkeypatch, chip())

    found = discover()

    assert [m.info.device for m in found.meters] == ["gpu0", "ane0", "cpu0", "dram0"]
    assert not found.missing  # NVML's absence says nothing where the chip measures the GPU
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert "gpu   measured on gpu0 (counter), ane0 (counter)" in out
    assert "ane0: counter, Apple Neural Engine - model-based (IOReport" in out


def test_a_field_the_chip_lacks_is_missing_and_an_estimate_stands_in_for_dram(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = chip()
    fake.absent = {"ane_mj", "dram_mj"}
    install(monkeypatch, fake)

    found = discover()

    assert [m.info.device for m in found.meters] == ["gpu0", "cpu0", "dram"]
    assert found.meters[-1].info.method == "estimate"
    assert {(m.component, m.device) for m in found.missing} == {("gpu", "ane0"), ("dram", "dram")}


def test_a_monitor_that_cannot_start_leaves_cpu_and_dram_estimated(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = chip()
    fake.start_fails = True
    install(monkeypatch, fake)

    found = discover()

    assert sorted(m.info.method for m in found.meters) == ["estimate", "estimate"]
    assert any("no IOReport energy model" in m.reason for m in found.missing)


@pytest.mark.parametrize("value", [None, -5, float("nan"), "12"])
def test_a_value_that_is_not_energy_is_a_read_error(
    monkeypatch: pytest.MonkeyPatch, value: object
) -> None:
    fake = chip()
    install(monkeypatch, fake)
    cpu = find_apple_silicon().meters[0]
    monkeypatch.setattr(fake, "metrics", lambda: types.SimpleNamespace(cpu_total_mj=value))
    with pytest.raises(MeterReadError, match="cpu0: cpu_total_mj is"):
        cpu.read()


def test_epochs_match_the_chip_s_energy_and_a_lost_monitor_fails_each_meter_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    t0 = time.monotonic()
    fake = chip()
    fake.power_w["gpu_mj"] = step_profile([(0.0, 21.0), (t0 + 0.25, 30.0), (t0 + 0.55, 12.0)])
    install(monkeypatch, fake)
    with Tracker("mac", tmp_path / "runs", intensity=300.0, verbose=0) as tracker:
        for _ in range(2):
            with tracker.epoch():
                time.sleep(0.4)
        with tracker.epoch():
            time.sleep(0.1)
            fake.fail = True
            time.sleep(0.1)
    *good, lost = tracker.epochs
    for record in good:
        for name, field_name in zip(("cpu0", "gpu0", "ane0", "dram0"), FIELDS, strict=True):
            truth_j = fake.power_w[field_name].energy_j(record.start_s, record.end_s)
            assert device(record, name).energy_j == pytest.approx(truth_j, rel=1e-3), name
        assert record.gpu_energy_j == pytest.approx(
            device(record, "gpu0").energy_j + device(record, "ane0").energy_j  # type: ignore[operator]
        )
    for name in ("cpu0", "gpu0", "ane0", "dram0"):
        assert device(lost, name).method == "failed"
        assert len([w for w in tracker.summary.warnings if f"{name} (" in w and STOPPED in w]) == 1


def test_a_package_that_fails_to_load_is_missing_with_a_reinstall_fix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install(monkeypatch, chip())
    monkeypatch.delitem(sys.modules, "zeus_apple_silicon")

    def broken_import(name: str) -> types.ModuleType:
        raise OSError(f"dlopen {name}: image not found")

    monkeypatch.setattr("backends.soc.apple.importlib.import_module", broken_import)

    found = discover()

    assert sorted(m.info.method for m in found.meters) == ["estimate", "estimate"]
    assert any("failed to load" in m.reason and "reinstall" in m.fix for m in found.missing)
