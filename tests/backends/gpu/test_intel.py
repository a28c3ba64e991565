"""Intel discrete GPUs through the i915/xe hwmon ``energy1_input``, from trees in tmp_path."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from backends import sysfs
from backends.base import MeterUnavailable
from backends.gpu.intel import REGISTER_WRAP_J, find_intel_gpus
from tests.fake_hwmon import IntelEnergy, LiveSysfs, build_hwmon
from tests.fake_nvml import install_no_nvml, step_profile
from tests.fake_powercap import honour_file_modes
from tracker import DeviceEnergy, EpochRecord, Tracker

RATED_UW = 225_000_000  # an Arc A770's 225 W


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    sys_root = tmp_path / "sys"
    monkeypatch.setenv(sysfs.ROOT_ENV, str(sys_root))
    install_no_nvml(monkeypatch)
    return sys_root


def card(root: Path, number: int, name: str, bus_id: str, **attributes: object) -> Path:
    values: dict[str, object] = {"energy1_input": 0, "power1_rated_max": RATED_UW}
    values.update(attributes)
    return build_hwmon(root, number, name, values, bus_id=bus_id)


def device(record: EpochRecord, name: str) -> DeviceEnergy:
    return next(d for d in record.devices if d.device == name)


def test_cards_are_found_by_hwmon_name_in_pci_order_and_gt_entries_are_skipped(root: Path) -> None:
    card(root, 2, "xe", "0000:0a:00.0")
    card(root, 3, "i915", "0000:03:00.0")
    build_hwmon(root, 4, "i915_gt0", {"energy1_input": 5})  # a tile of the i915 card
    build_hwmon(root, 0, "coretemp", {"temp1_input": 40000})

    found = find_intel_gpus()

    assert [m.info.device for m in found.meters] == ["xpu0", "xpu1"]
    first, second = (m.info for m in found.meters)
    assert "0000:03:00.0" in first.detail and "i915" in first.detail
    assert "0000:0a:00.0" in second.detail and "xe" in second.detail
    assert first.model == "Intel GPU [8086:56a0]"
    assert (first.component, first.method, first.host_level) == ("gpu", "counter", True)
    assert not found.missing


def test_a_reading_is_energy1_input_in_joules_beyond_32_bits(root: Path) -> None:
    hwmon = card(root, 0, "i915", "0000:03:00.0", energy1_input=2**40)
    (meter,) = find_intel_gpus().meters
    assert meter.read().energy_j == pytest.approx(2**40 / 1e6)
    (hwmon / "energy1_input").write_text(f"{2**40 + 1_500_000}\n")
    assert meter.read().energy_j == pytest.approx(2**40 / 1e6 + 1.5)


def test_the_hidden_register_bounds_the_read_gap_at_the_card_s_rated_power(root: Path) -> None:
    card(root, 0, "i915", "0000:03:00.0", power1_max=150_000_000)
    card(root, 1, "xe", "0000:04:00.0", power1_rated_max=0, power1_max=0)
    rated, unstated = find_intel_gpus().meters
    assert rated.max_power_w == pytest.approx(225.0)  # the larger of rated and PL1
    assert rated.wrap_j is None  # the file never wraps: the driver widens the register
    assert rated.max_read_gap_s() == pytest.approx(REGISTER_WRAP_J / 225.0)
    assert unstated.max_power_w is None
    assert unstated.max_read_gap_s() == pytest.approx(262.144)  # 4.37 minutes at 1000 W


def test_no_intel_card_gives_nothing_not_a_missing(root: Path) -> None:
    build_hwmon(root, 0, "amdgpu", {"power1_average": 5})
    assert not find_intel_gpus().meters and not find_intel_gpus().missing
    shutil.rmtree(root / "class")
    assert not find_intel_gpus().meters and not find_intel_gpus().missing


def test_an_unreadable_counter_is_missing_with_the_chmod_and_udev_fix(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hwmon = card(root, 0, "i915", "0000:03:00.0")
    (hwmon / "energy1_input").chmod(0)
    honour_file_modes(monkeypatch)

    (missing,) = find_intel_gpus().missing

    assert (missing.component, missing.device) == ("gpu", "xpu0")
    assert "not readable" in missing.reason
    assert f"sudo chmod a+r {hwmon}/energy1_input" in missing.fix
    assert 'ATTR{name}=="i915"' in missing.fix and "udevadm trigger" in missing.fix


def test_an_old_kernel_without_energy1_input_is_missing_with_the_kernel_fix(root: Path) -> None:
    build_hwmon(root, 0, "i915", {"power1_max": RATED_UW}, bus_id="0000:03:00.0")
    (missing,) = find_intel_gpus().missing
    assert "no energy1_input" in missing.reason and "6.2" in missing.fix


@pytest.mark.parametrize("text", ["", "-5", "12 uJ", "nan"])
def test_garbage_in_the_counter_is_missing_at_discovery(root: Path, text: str) -> None:
    card(root, 0, "xe", "0000:03:00.0", energy1_input=text)
    (missing,) = find_intel_gpus().missing
    assert "cannot read" in missing.reason


def test_a_vanished_card_raises_meter_unavailable_naming_it(root: Path) -> None:
    hwmon = card(root, 0, "xe", "0000:03:00.0")
    (meter,) = find_intel_gpus().meters
    shutil.rmtree(hwmon)
    with pytest.raises(MeterUnavailable, match=r"xpu0: cannot read its GPU energy"):
        meter.read()


def test_epochs_match_the_cards_energy_and_a_card_lost_mid_run_is_failed_and_warned_once(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t0 = time.monotonic()
    live = LiveSysfs(monkeypatch)
    powers = [step_profile([(t0, 180.0), (t0 + 0.3, 220.0)]), step_profile([(t0, 90.0)])]
    hwmons = [card(root, n, "i915", f"0000:0{n + 3}:00.0") for n in (0, 1)]
    for hwmon, power in zip(hwmons, powers, strict=True):
        live.serve(hwmon / "energy1_input", IntelEnergy(power, t0))
    with Tracker("arc", tmp_path / "runs", components=["gpu"], intensity=300.0, verbose=0) as t:
        # Epochs of a second: a thread switch between the driver's value and its time stamp
        # (a few ms at most) stays well inside the 0.1 % asked of a counter.
        for seconds in (1.0, 1.0):
            with t.epoch():
                time.sleep(seconds)
        with t.epoch():
            time.sleep(0.5)
            shutil.rmtree(hwmons[1])  # the second card falls off the bus
            time.sleep(0.5)
    for record in t.epochs:
        truth_j = powers[0].energy_j(record.start_s, record.end_s)
        assert device(record, "xpu0").energy_j == pytest.approx(truth_j, rel=1e-3)
        assert device(record, "xpu0").method == "counter"
    _, second, losing = t.epochs
    assert device(second, "xpu1").energy_j == pytest.approx(
        powers[1].energy_j(second.start_s, second.end_s), rel=1e-3
    )
    assert device(losing, "xpu1").method == "failed"
    assert len([w for w in t.summary.warnings if "xpu1" in w and "stopped working" in w]) == 1
    assert not [w for w in t.summary.warnings if "xpu0" in w and "stopped working" in w]


def test_the_32_bit_register_wrap_is_caught_by_reading_within_its_period(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A card that can draw 1.5 MW wraps its register every 0.17 s at most; at 300 kW every
    0.87 s, so a 1.3 s epoch holds a wrap that reads 2 s apart would lose (262 kJ)."""
    t0 = time.monotonic()
    live = LiveSysfs(monkeypatch)
    power = step_profile([(t0, 300_000.0)])
    hwmon = card(root, 0, "xe", "0000:03:00.0", power1_rated_max=1_500_000_000_000)
    live.serve(hwmon / "energy1_input", IntelEnergy(power, t0))
    with (
        Tracker(
            "wrap", tmp_path / "runs", components=["gpu"], interval=2.0, intensity=1.0, verbose=0
        ) as t,
        t.epoch(),
    ):
        time.sleep(1.3)
    (record,) = t.epochs
    truth_j = power.energy_j(record.start_s, record.end_s)
    assert truth_j > REGISTER_WRAP_J  # the register really wrapped within the epoch
    assert device(record, "xpu0").energy_j == pytest.approx(truth_j, rel=1e-3)
    assert [w for w in t.summary.warnings if "xpu0's counter can wrap every" in w]


def test_a_fifo_in_place_of_the_counter_is_missing_and_nothing_blocks(root: Path) -> None:
    hwmon = card(root, 0, "xe", "0000:03:00.0")
    (hwmon / "energy1_input").unlink()
    os.mkfifo(hwmon / "energy1_input")
    (missing,) = find_intel_gpus().missing  # a blocking open would hang here
    assert "not a regular file" in missing.reason
