"""The AMD backend against a simulated ``amdsmi`` and amdgpu sysfs trees: meter choice, exact
energy per epoch, HIP numbering, MI250X pairs, failures and permissions."""

from __future__ import annotations

import enum
import itertools
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends import sysfs
from backends.base import Found, Meter, MeterPermissionError, MeterReadError, MeterUnavailable
from backends.discover import discover as discover_all
from backends.gpu import amd
from backends.gpu.amd import INSTALL_FIX, PERMISSION_FIX, find_amd_gpus
from tests.fake_amdsmi import (
    MI100,
    MI250X,
    AmdSmiRetCode,
    SimulatedAmdGpu,
    build_amdgpu_sysfs,
    build_kfd_topology,
    install_fake_amdsmi,
)
from tests.fake_nvml import SimulatedGPU, constant_power, install_fake_nvml, install_no_nvml
from tests.fake_powercap import build_powercap, honour_file_modes
from tests.measure.test_invariants import T0_S, simulated
from tracker import DeviceEnergy, EpochRecord, Tracker
from tracker.carbon.intensity import Constant
from tracker.carbon.pricing import Carbon
from tracker.measure.sampler import Sampler
from tracker.notices import Notices

BDFS = ("0000:05:00.0", "0000:26:00.0", "0000:46:00.0", "0000:65:00.0")
HIP_UUIDS = ("GPU-1a2b3c4d5e6f7081", "GPU-1a2b99887766aabb", "GPU-77e0aa11bb22cc33", "GPU-d00d5eed")


class Opened:
    """Runs discovery and closes every meter it opened after the test."""

    def __init__(self) -> None:
        self.found: list[Found] = []

    def __call__(self, *args: object, **kwargs: object) -> Found:
        found = find_amd_gpus(*args, **kwargs)  # type: ignore[arg-type]
        self.found.append(found)
        return found

    def close(self) -> None:
        for found in self.found:
            for meter in found.meters:
                meter.close()


@pytest.fixture
def find() -> Iterator[Opened]:
    opened = Opened()
    yield opened
    opened.close()


@pytest.fixture(autouse=True)
def no_nvidia(monkeypatch: pytest.MonkeyPatch) -> None:
    install_no_nvml(monkeypatch)


def four_gpus() -> list[SimulatedAmdGpu]:
    """amd-smi (PCI) order 0..3, HIP order 2, 0, 3, 1; physical GPU i draws 100 + i watts."""
    hip_ids = (1, 3, 0, 2)
    return [
        SimulatedAmdGpu(
            BDFS[i], hip_id=hip_ids[i], hip_uuid=HIP_UUIDS[i], power_w=constant_power(100.0 + i)
        )
        for i in range(4)
    ]


def which(found: Found) -> list[int]:
    """The physical (amd-smi order) GPU behind each meter, told by its power."""
    return [round(_power_w(m)) - 100 for m in found.meters]


def _power_w(meter: Meter) -> float:
    power_w = meter.power_hint_w() if meter.info.method == "counter" else meter.read().power_w
    assert power_w is not None
    return power_w


# --- meter choice ------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["energy_accumulator", "power"])
def test_energy_counter_under_either_key_is_read_in_joules(
    monkeypatch: pytest.MonkeyPatch, find: Opened, key: str
) -> None:
    gpu = SimulatedAmdGpu(BDFS[0], hip_id=0, energy_key=key, power_w=constant_power(250.0))
    install_fake_amdsmi(monkeypatch, [gpu])
    found = find()
    assert (found.missing, found.notes) == ([], [])
    [meter] = found.meters
    assert (meter.info.device, meter.info.method, meter.info.model) == (
        "gpu0",
        "counter",
        gpu.market_name,
    )
    assert f"bdf={BDFS[0]}" in meter.info.detail and "scope=GPU" in meter.info.detail
    first, second = meter.read(), meter.read()
    taken = gpu.counter_reads_s[-2:]
    assert first.energy_j == pytest.approx(gpu.accumulator(taken[0]) * 15.259e-6)
    assert second.energy_j is not None and first.energy_j is not None
    assert second.energy_j - first.energy_j == pytest.approx(gpu.energy_j(*taken), abs=1e-4)
    assert meter.power_hint_w() == 250.0


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ("AMD Instinct MI300X", "socket_power"),
        ("AMD Instinct MI300X", "current_socket_power"),
        ("AMD Instinct MI210", "average_socket_power"),
    ],
)
def test_gpu_without_counter_polls_the_power_field_its_generation_fills(
    monkeypatch: pytest.MonkeyPatch, find: Opened, model: str, field: str
) -> None:
    gpu = SimulatedAmdGpu(BDFS[0], 0, model, energy_key=None, power_field=field)
    gpu.power_w = constant_power(412.4)
    install_fake_amdsmi(monkeypatch, [gpu])
    [meter] = find().meters
    assert meter.info.method == "power" and f"field={field}" in meter.info.detail
    reading = meter.read()
    assert (reading.power_w, reading.energy_j) == (412.0, None)  # amdsmi gives whole watts


def test_gpu_with_no_counter_and_every_power_field_na_is_missing(
    monkeypatch: pytest.MonkeyPatch, find: Opened
) -> None:
    install_fake_amdsmi(
        monkeypatch, [SimulatedAmdGpu(BDFS[0], 0, energy_key=None, power_field=None)]
    )
    found = find()
    assert found.meters == []
    [missing] = found.missing
    assert (
        missing.device == "gpu0" and "neither a working energy counter nor power" in missing.reason
    )


def test_a_counter_that_does_not_move_is_dropped_for_power_polling_with_a_note(
    monkeypatch: pytest.MonkeyPatch, find: Opened
) -> None:
    install_fake_amdsmi(monkeypatch, [SimulatedAmdGpu(BDFS[0], 0, MI100, counter_stuck=True)])
    found = find()
    assert [m.info.method for m in found.meters] == ["power"]
    [note] = found.notes
    assert "gpu0" in note and "did not advance" in note and "power polling" in note


def test_a_counter_far_from_the_power_reading_is_dropped_naming_both_figures(
    monkeypatch: pytest.MonkeyPatch, find: Opened
) -> None:
    gpu = SimulatedAmdGpu(BDFS[0], 0)
    install_fake_amdsmi(monkeypatch, [gpu])
    counts = gpu.accumulator
    monkeypatch.setattr(gpu, "accumulator", lambda t_s: counts(t_s) * 1000)  # runs 1000x fast
    found = find()
    assert [m.info.method for m in found.meters] == ["power"]
    [note] = found.notes
    assert "disagrees with the power reading" in note and "300 W reported" in note


def test_a_counter_that_agrees_with_power_is_kept(
    monkeypatch: pytest.MonkeyPatch, find: Opened
) -> None:
    install_fake_amdsmi(monkeypatch, [SimulatedAmdGpu(BDFS[0], 0, power_w=constant_power(90.0))])
    assert [m.info.method for m in find().meters] == ["counter"]


# --- HIP numbering and the visibility variables --------------------------------------------------


def test_gpus_are_numbered_by_hip_id_not_by_amdsmi_order(
    monkeypatch: pytest.MonkeyPatch, find: Opened
) -> None:
    install_fake_amdsmi(monkeypatch, four_gpus())
    found = find()
    assert [m.info.device for m in found.meters] == ["gpu0", "gpu1", "gpu2", "gpu3"]
    assert which(found) == [2, 0, 3, 1]
    assert "hip_id=0" in found.meters[0].info.detail


def test_without_enumeration_info_the_kfd_node_order_is_hips(
    monkeypatch: pytest.MonkeyPatch, find: Opened
) -> None:
    gpus = four_gpus()
    for gpu, node in zip(gpus, (5, 2, 4, 3), strict=True):
        gpu.kfd_node = node
    install_fake_amdsmi(monkeypatch, gpus, enumeration=False)  # ROCm before 6.4
    assert which(find()) == [1, 3, 2, 0]


@pytest.mark.parametrize(
    ("variables", "expected"),
    [
        ({"HIP_VISIBLE_DEVICES": "1,0"}, [0, 2]),
        ({"CUDA_VISIBLE_DEVICES": "3"}, [1]),
        ({"HIP_VISIBLE_DEVICES": "2", "CUDA_VISIBLE_DEVICES": "0"}, [3]),  # HIP's wins
        ({"ROCR_VISIBLE_DEVICES": "3,1"}, [1, 0]),
        ({"ROCR_VISIBLE_DEVICES": "3,1,2", "HIP_VISIBLE_DEVICES": "2"}, [3]),  # HIP counts ROCr's
        ({"ROCR_VISIBLE_DEVICES": "GPU-77e0,GPU-d00d"}, [2, 3]),
        ({"HIP_VISIBLE_DEVICES": HIP_UUIDS[1]}, [1]),
        ({"HIP_VISIBLE_DEVICES": "0,9,1"}, [2]),  # an entry naming nothing hides the rest
        ({"HIP_VISIBLE_DEVICES": "0,-1,1"}, [2]),
        ({"HIP_VISIBLE_DEVICES": ""}, []),
    ],
)
def test_visibility_variables_pick_the_physical_gpus_the_runtime_would(
    monkeypatch: pytest.MonkeyPatch, find: Opened, variables: dict[str, str], expected: list[int]
) -> None:
    install_fake_amdsmi(monkeypatch, four_gpus())
    found = find(environ=variables)
    assert which(found) == expected
    assert [m.info.device for m in found.meters] == [f"gpu{k}" for k in range(len(expected))]


def test_a_visible_entry_naming_no_gpu_is_missing_with_what_exists(
    monkeypatch: pytest.MonkeyPatch, find: Opened
) -> None:
    install_fake_amdsmi(monkeypatch, four_gpus())
    found = find(environ={"ROCR_VISIBLE_DEVICES": "0,GPU-1a2b"})
    [missing] = found.missing
    assert (
        missing.device == "gpu1"
        and "ROCR_VISIBLE_DEVICES entry 'GPU-1a2b' matches 2 GPUs" in missing.reason
    )
    assert BDFS[3] in missing.fix


def test_visibility_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, find: Opened
) -> None:
    install_fake_amdsmi(monkeypatch, four_gpus())
    monkeypatch.setenv("HIP_VISIBLE_DEVICES", "3")
    assert which(find()) == [1]


def test_wanted_gpus_are_hip_indices_or_uuids_and_an_unknown_one_is_a_value_error(
    monkeypatch: pytest.MonkeyPatch, find: Opened
) -> None:
    smi = install_fake_amdsmi(monkeypatch, four_gpus())
    found = find([3, "GPU-77e0", 3])
    assert [m.info.device for m in found.meters] == ["gpu3", "gpu0"]
    assert which(found) == [1, 2]
    with pytest.raises(ValueError, match=r"^gpus: 7 names no GPU; accepted: .*0000:65:00.0"):
        find([7])
    assert smi.init_calls == smi.shutdown_calls + 1  # the first call's meters are still open


# --- MI250X: two dies, one sensor ---------------------------------------------------------------


def mi250x_node() -> list[SimulatedAmdGpu]:
    """One MI250X package: the first GCD's sensor reads both dies (350 W), the second 0 W."""
    return [
        SimulatedAmdGpu(
            BDFS[0], 0, MI250X, power_w=constant_power(350.0), power_field="average_socket_power"
        ),
        SimulatedAmdGpu(
            BDFS[1], 1, MI250X, power_w=constant_power(0.0), power_field="average_socket_power"
        ),
    ]


def test_mi250x_package_is_one_meter_on_its_first_gcd_and_the_second_is_covered(
    monkeypatch: pytest.MonkeyPatch, find: Opened
) -> None:
    install_fake_amdsmi(monkeypatch, mi250x_node())
    found = find()
    [meter] = found.meters
    assert meter.info.device == "gpu0" and meter.info.method == "counter"
    assert f"scope=package (both GCDs: bdf={BDFS[0]} and bdf={BDFS[1]})" in meter.info.detail
    assert found.missing == []
    [note] = found.notes
    assert note.startswith("gpu1 (AMD Instinct MI250X GCD") and "gpu0 covers both GCDs" in note


def test_a_process_seeing_only_the_second_gcd_reports_it_missing_naming_the_first(
    monkeypatch: pytest.MonkeyPatch, find: Opened
) -> None:
    install_fake_amdsmi(monkeypatch, mi250x_node())
    found = find(environ={"ROCR_VISIBLE_DEVICES": "1"})
    assert found.meters == []
    [missing] = found.missing
    assert missing.device == "gpu0" and f"bdf={BDFS[0]}" in missing.reason


def test_a_process_seeing_only_the_first_gcd_measures_the_package_and_says_so(
    monkeypatch: pytest.MonkeyPatch, find: Opened
) -> None:
    install_fake_amdsmi(monkeypatch, mi250x_node())
    found = find(environ={"HIP_VISIBLE_DEVICES": "0"})
    assert [m.info.device for m in found.meters] == ["gpu0"]
    [note] = found.notes
    assert "including the other GCD" in note and BDFS[1] in note


# --- energy per epoch against the simulated truth -----------------------------------------------


def test_per_epoch_energy_matches_the_simulation_counter_and_power_at_the_default_interval(
    tmp_path: Path,
) -> None:
    """Minute-long epochs on a simulated clock, the load stepping by up to 180 W every 18 s."""
    steps = [(T0_S + 17.9 * k, (200.0, 380.0, 310.0)[k % 3]) for k in range(20)]
    with simulated(tmp_path / "none") as (patch, clock):
        patch.setattr(time, "sleep", lambda s: setattr(clock, "now_s", clock.now_s + s))
        from tests.fake_nvml import step_profile

        counter = SimulatedAmdGpu(
            BDFS[0], 0, power_w=step_profile(steps), counter_origin_s=T0_S - 5
        )
        power = SimulatedAmdGpu(BDFS[1], 1, energy_key=None, power_w=step_profile(steps[3:]))
        old = SimulatedAmdGpu(BDFS[2], 2, energy_key="power", power_w=step_profile(steps[5:]))
        smi = install_fake_amdsmi(patch, [counter, power, old])
        install_no_nvml(patch)
        found = discover_all(("gpu",))
        assert [m.info.method for m in found.meters] == ["counter", "power", "counter"]
        notices = Notices(quiet=True)
        carbon = Carbon(Constant(300.0), 1.0, notices)
        sampler = Sampler(found.meters, carbon.co2_g, notices, 0.5, 1.0, lambda points: None)
        sampler.poll()
        cuts = [sampler.snapshot()]
        for edge_s in (61.3, 130.9, 200.2):
            while clock.now_s + 0.5 <= T0_S + edge_s:
                clock.now_s += 0.5
                sampler.poll()
            clock.now_s = T0_S + edge_s
            cuts.append(sampler.snapshot())
        sampler.stop()
    assert not smi.initialized  # the last meter's close shut amdsmi down
    for (t0_s, a), (t1_s, b) in itertools.pairwise(cuts):
        for device, gpu, tolerance in (
            ("gpu0", counter, 1e-3),
            ("gpu1", power, 1e-2),
            ("gpu2", old, 1e-3),
        ):
            truth_j = gpu.energy_j(t0_s, t1_s)
            assert b[device].energy_j - a[device].energy_j == pytest.approx(truth_j, rel=tolerance)


def test_a_counter_reset_is_bridged_never_negative(tmp_path: Path) -> None:
    with simulated(tmp_path / "none") as (patch, clock):
        patch.setattr(time, "sleep", lambda s: setattr(clock, "now_s", clock.now_s + s))
        gpu = SimulatedAmdGpu(BDFS[0], 0, power_w=constant_power(200.0), counter_origin_s=0.0)
        install_fake_amdsmi(patch, [gpu])
        found = find_amd_gpus()
        notices = Notices(quiet=True)
        sampler = Sampler(found.meters, lambda j, a, b: 0.0, notices, 0.5, 1.0, lambda p: None)
        sampler.poll()
        start = sampler.snapshot()
        gpu.reset_at_s = clock.now_s + 10.2
        for _ in range(120):
            clock.now_s += 0.5
            sampler.poll()
        end = sampler.snapshot()
        sampler.stop()
    used_j = end[1]["gpu0"].energy_j - start[1]["gpu0"].energy_j
    assert used_j == pytest.approx(200.0 * (end[0] - start[0]), rel=1e-3)
    assert any("went backwards" in w for w in notices.messages())


# --- a real Tracker ----------------------------------------------------------------------------


def device(record: EpochRecord, name: str) -> DeviceEnergy:
    return next(d for d in record.devices if d.device == name)


def test_a_tracker_measures_each_amd_gpu_per_epoch_and_flags_one_lost_mid_run(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stays = SimulatedAmdGpu(BDFS[0], 1, power_w=constant_power(310.0))
    lost = SimulatedAmdGpu(BDFS[1], 0, energy_key=None, power_w=constant_power(205.0))
    install_fake_amdsmi(monkeypatch, [stays, lost])
    with Tracker("amd", tmp_path, components=["gpu"], intensity=300.0, verbose=0) as tracker:
        for _ in range(2):
            with tracker.epoch():
                time.sleep(0.3)
        tracker.epoch_start()
        time.sleep(0.1)
        lost.fail_after_s = time.monotonic()
        time.sleep(0.1)
        tracker.epoch_end()
        with tracker.epoch():
            time.sleep(0.1)
    *whole, losing, after = tracker.epochs
    for record in whole:
        assert device(record, "gpu1").energy_j == pytest.approx(
            stays.energy_j(record.start_s, record.end_s), rel=1e-3
        )
        assert device(record, "gpu0").energy_j == pytest.approx(
            205.0 * (record.end_s - record.start_s), rel=1e-2
        )
        assert record.methods == "gpu=power+counter" or "gpu=" in record.methods
    assert device(losing, "gpu0").method == "failed"
    assert device(after, "gpu0").method == "failed" and device(after, "gpu0").energy_j is None
    assert device(after, "gpu1").energy_j == pytest.approx(
        stays.energy_j(after.start_s, after.end_s), rel=1e-3
    )
    warned = [w for w in tracker.summary.warnings if w.startswith("gpu0 (")]
    assert len(warned) == 1 and "AMDSMI_STATUS_NOT_FOUND" in warned[0]


# --- errors and what they mean ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (AmdSmiRetCode.STATUS_NO_PERM, MeterPermissionError),
        (AmdSmiRetCode.STATUS_NOT_FOUND, MeterUnavailable),
        (AmdSmiRetCode.STATUS_NOT_INIT, MeterUnavailable),
        (AmdSmiRetCode.STATUS_BUSY, MeterReadError),
        (AmdSmiRetCode.STATUS_IO, MeterReadError),
    ],
)
def test_an_amdsmi_error_mid_run_raises_the_meter_error_its_status_means(
    monkeypatch: pytest.MonkeyPatch, find: Opened, status: AmdSmiRetCode, kind: type[Exception]
) -> None:
    gpu = SimulatedAmdGpu(BDFS[0], 0, fail_with=status)
    install_fake_amdsmi(monkeypatch, [gpu])
    [meter] = find().meters
    gpu.fail_after_s = time.monotonic()
    with pytest.raises(kind) as error:
        meter.read()
    assert type(error.value) is kind
    assert str(error.value).startswith(
        f"gpu0 (bdf={BDFS[0]} hip_id=0 scope=GPU): amdsmi_get_energy_count failed"
    )
    assert f"AMDSMI_{status.name}" in str(error.value)
    assert meter.power_hint_w() is None


def test_a_power_field_turning_na_mid_run_is_a_read_error(
    monkeypatch: pytest.MonkeyPatch, find: Opened
) -> None:
    gpu = SimulatedAmdGpu(BDFS[0], 0, energy_key=None)
    install_fake_amdsmi(monkeypatch, [gpu])
    [meter] = find().meters
    gpu.power_field = None
    with pytest.raises(MeterReadError, match="current_socket_power='N/A', not a power in W"):
        meter.read()


def test_amdsmi_is_initialised_once_shut_down_by_the_last_close_and_read_after_close_fails(
    monkeypatch: pytest.MonkeyPatch, find: Opened
) -> None:
    smi = install_fake_amdsmi(monkeypatch, four_gpus()[:2])
    meters = find().meters + find().meters
    assert smi.init_calls == 1
    for meter in meters[:-1]:
        meter.close()
        meter.close()
    assert smi.initialized
    meters[-1].close()
    assert (smi.init_calls, smi.shutdown_calls, smi.initialized) == (1, 1, False)
    with pytest.raises(MeterUnavailable, match="read after close"):
        meters[0].read()


def test_calls_from_several_threads_never_overlap_in_the_library(
    monkeypatch: pytest.MonkeyPatch, find: Opened
) -> None:
    gpus = four_gpus()
    smi = install_fake_amdsmi(monkeypatch, gpus)
    meters = find().meters
    for gpu in gpus:
        gpu.call_delay_s = 0.002
    threads = [threading.Thread(target=lambda m=m: [m.read() for _ in range(10)]) for m in meters]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert smi.max_concurrent == 1


# --- without amdsmi, or without access --------------------------------------------------------


@pytest.fixture
def sysfs_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "sys"
    monkeypatch.setenv(sysfs.ROOT_ENV, str(root))
    return root


def test_without_amdsmi_hwmon_power_is_polled_with_a_note_on_the_counter(
    sysfs_root: Path, find: Opened
) -> None:
    cards = build_amdgpu_sysfs(sysfs_root, [BDFS[1], BDFS[0]], product_name="AMD Instinct MI210")
    cards[0].set_power_w(123.456789)
    found = find()
    assert [m.info.device for m in found.meters] == ["gpu0", "gpu1"]
    assert [m.info.method for m in found.meters] == ["power", "power"]
    gpu1 = found.meters[1]  # PCI order: BDFS[1] is second
    assert f"bdf={BDFS[1]}" in gpu1.info.detail and "hwmon=power1_average" in gpu1.info.detail
    assert gpu1.info.model == "AMD Instinct MI210"
    assert gpu1.read().power_w == pytest.approx(123.456789)
    [note] = found.notes
    assert "amdsmi is not installed" in note and INSTALL_FIX in note
    assert found.missing == []


def test_hwmon_without_power1_average_uses_power1_input(sysfs_root: Path, find: Opened) -> None:
    build_amdgpu_sysfs(sysfs_root, [BDFS[0]], power_file="power1_input")
    [meter] = find().meters
    assert meter.info.detail.endswith("hwmon=power1_input") and meter.read().power_w == 100.0


def test_hwmon_honours_the_visibility_variables_by_pci_order_and_unique_id(
    sysfs_root: Path, find: Opened
) -> None:
    build_amdgpu_sysfs(sysfs_root, BDFS[:3], unique_ids=("aa01", "bb02", "cc03"))
    found = find(environ={"ROCR_VISIBLE_DEVICES": "GPU-cc03,0"})
    assert [m.info.detail.split()[0] for m in found.meters] == [f"bdf={BDFS[2]}", f"bdf={BDFS[0]}"]


def test_hwmon_power_unreadable_is_missing_with_the_group_fix(
    sysfs_root: Path, find: Opened, monkeypatch: pytest.MonkeyPatch
) -> None:
    [card] = build_amdgpu_sysfs(sysfs_root, [BDFS[0]])
    (card.hwmon_dir / "power1_average").chmod(0)
    honour_file_modes(monkeypatch)
    found = find()
    [missing] = found.missing
    assert (missing.device, missing.fix) == ("gpu0", PERMISSION_FIX)
    assert "render" in missing.fix and "video" in missing.fix


def test_amdsmi_refusing_this_user_falls_back_to_hwmon_with_the_group_fix(
    sysfs_root: Path, find: Opened, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_amdgpu_sysfs(sysfs_root, [BDFS[0]])
    install_fake_amdsmi(monkeypatch, [], init_error=AmdSmiRetCode.STATUS_NO_PERM)
    found = find()
    assert [m.info.method for m in found.meters] == ["power"]
    [note] = found.notes
    assert "AMDSMI_STATUS_NO_PERM" in note and PERMISSION_FIX in note


def test_amdsmi_refusing_this_user_without_hwmon_is_missing_with_the_group_fix(
    find: Opened, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_amdsmi(monkeypatch, [], init_error=AmdSmiRetCode.STATUS_NO_PERM)
    [missing] = find().missing
    assert missing.fix == PERMISSION_FIX and "amdsmi could not start" in missing.reason


def test_amdsmi_seeing_no_gpu_that_the_kernel_lists_suggests_the_groups(
    sysfs_root: Path, find: Opened, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_amdgpu_sysfs(sysfs_root, [BDFS[0]])
    install_fake_amdsmi(monkeypatch, [])
    found = find()
    assert [m.info.method for m in found.meters] == ["power"]
    assert PERMISSION_FIX in found.notes[0]


def test_a_machine_without_amd_gpus_gives_nothing_at_all(
    find: Opened, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert find() == Found()
    install_fake_amdsmi(monkeypatch, [], init_error=AmdSmiRetCode.STATUS_INIT_ERROR)
    assert find() == Found()  # amdsmi installed on a machine without AMD GPUs
    install_fake_amdsmi(monkeypatch, [])
    assert find() == Found()  # ... or one whose amdsmi starts and lists nothing


@pytest.mark.parametrize(
    "body",
    [
        "print('libamd_smi.so: cannot open shared object file')\nraise OSError('libamd_smi.so')",
        "print('ROCm 6.0 library, 7.0 package')\nraise AttributeError('amdsmi_get_energy_count')",
        "raise KeyError('AMDSMI_STATUS_NO_DATA')",
    ],
)
def test_an_amdsmi_failing_at_import_is_silent_and_falls_back(
    tmp_path: Path,
    sysfs_root: Path,
    find: Opened,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    body: str,
) -> None:
    package = tmp_path / "site" / "amdsmi"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "amdsmi")
    build_amdgpu_sysfs(sysfs_root, [BDFS[0]])
    found = find()
    assert capsys.readouterr().out == ""
    assert [m.info.method for m in found.meters] == ["power"]
    assert "amdsmi cannot be loaded" in found.notes[0]


def test_rocm_s_own_copy_is_used_when_the_package_is_not_installed(
    tmp_path: Path, find: Opened, monkeypatch: pytest.MonkeyPatch
) -> None:
    smi = install_fake_amdsmi(monkeypatch, [SimulatedAmdGpu(BDFS[0], 0)])
    monkeypatch.setitem(sys.modules, "_simulated_amdsmi", sys.modules["amdsmi"])
    monkeypatch.setitem(sys.modules, "amdsmi", None)  # no PyPI package
    package = tmp_path / "rocm" / "share" / "amd_smi" / "amdsmi"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        "import sys\nfrom . import amdsmi_interface\nglobals().update(amdsmi_interface.NAMES)\n"
    )
    (package / "amdsmi_interface.py").write_text(
        "import sys\nNAMES = {k: v for k, v in vars(sys.modules['_simulated_amdsmi']).items()"
        " if not k.startswith('__')}\n"
    )
    monkeypatch.setenv("ROCM_PATH", str(tmp_path / "rocm"))
    found = find()
    assert [m.info.method for m in found.meters] == ["counter"]
    assert smi.init_calls == 1


# --- discovery with both vendors ---------------------------------------------------------------


def test_a_machine_with_amd_gpus_only_does_not_report_nvml_missing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install_fake_amdsmi(monkeypatch, four_gpus()[:2])
    found = discover_all(("gpu",))
    try:
        assert [m.info.device for m in found.meters] == ["gpu0", "gpu1"]
        assert found.missing == []
    finally:
        for meter in found.meters:
            meter.close()


def test_nvidia_and_amd_gpus_on_one_machine_get_distinct_names_and_gpus_picks_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    install_fake_nvml(monkeypatch, [SimulatedGPU(uuid="GPU-aaaa-1111"), SimulatedGPU()])
    install_fake_amdsmi(monkeypatch, four_gpus()[:2])
    everything = discover_all(("gpu",))
    picked = discover_all(("gpu",), gpus=["GPU-aaaa", HIP_UUIDS[1]])
    try:
        assert [m.info.device for m in everything.meters] == ["gpu0", "gpu1", "gpu2", "gpu3"]
        assert [m.info.model for m in picked.meters] == [
            "NVIDIA H100 80GB HBM3",
            "AMD Instinct MI300X",
        ]
        assert len({m.info.device for m in picked.meters}) == 2
        with pytest.raises(ValueError, match=r"^gpus: "):
            discover_all(("gpu",), gpus=[5])
    finally:
        for meter in everything.meters + picked.meters:
            meter.close()


def test_status_names_of_early_amdsmi_releases_mean_the_same(
    monkeypatch: pytest.MonkeyPatch, find: Opened
) -> None:
    class Early(enum.IntEnum):  # AmdSmiRetCode as the first releases named it
        SUCCESS = 0
        NOT_IMPLEMENTED = 3
        ERR_NO_PERM = 10

    gpu = SimulatedAmdGpu(BDFS[0], 0, fail_with=AmdSmiRetCode.STATUS_NO_PERM)
    install_fake_amdsmi(monkeypatch, [gpu])
    monkeypatch.setattr(sys.modules["amdsmi"], "AmdSmiRetCode", Early)
    [meter] = find().meters
    gpu.fail_after_s = time.monotonic()
    with pytest.raises(MeterPermissionError, match="AMDSMI_STATUS_NO_PERM"):
        meter.read()
    gpu.fail_with = AmdSmiRetCode.STATUS_NOT_YET_IMPLEMENTED
    with pytest.raises(MeterUnavailable, match="AMDSMI_STATUS_NOT_YET_IMPLEMENTED"):
        meter.read()


def test_a_call_stuck_in_the_library_fails_other_reads_instead_of_stalling_them(
    monkeypatch: pytest.MonkeyPatch, find: Opened
) -> None:
    gpus = four_gpus()[:2]
    install_fake_amdsmi(monkeypatch, gpus)
    stuck, waiting = find().meters
    monkeypatch.setattr(amd, "LOCK_WAIT_S", 0.05)
    gpus[which(Found(meters=[stuck]))[0]].call_delay_s = 0.5  # its driver call hangs
    reader = threading.Thread(target=stuck.read)
    reader.start()
    time.sleep(0.1)
    try:
        with pytest.raises(MeterReadError, match="has not returned"):
            waiting.read()
    finally:
        reader.join()


def test_a_gpu_whose_asic_info_fails_is_still_measured_under_a_generic_name(
    monkeypatch: pytest.MonkeyPatch, find: Opened
) -> None:
    install_fake_amdsmi(monkeypatch, [SimulatedAmdGpu(BDFS[0], 0)])

    def refuse(handle: object) -> None:
        raise RuntimeError("asic info unavailable")

    monkeypatch.setattr(sys.modules["amdsmi"], "amdsmi_get_gpu_asic_info", refuse)
    [meter] = find().meters
    assert (meter.info.model, meter.info.method) == ("AMD GPU", "counter")


def test_a_hwmon_power_file_that_vanishes_mid_run_makes_the_meter_unavailable(
    sysfs_root: Path, find: Opened
) -> None:
    [card] = build_amdgpu_sysfs(sysfs_root, [BDFS[0]])
    [meter] = find().meters
    (card.hwmon_dir / "power1_average").unlink()
    with pytest.raises(MeterUnavailable, match="gpu0: cannot read its power"):
        meter.read()


# --- KFD topology: HIP order and APUs -----------------------------------------------------------


def test_hwmon_gpus_are_numbered_in_kfd_node_order_as_hip_numbers_them(
    sysfs_root: Path, find: Opened
) -> None:
    build_amdgpu_sysfs(sysfs_root, BDFS[:3])
    build_kfd_topology(sysfs_root, [(BDFS[2], 0), (BDFS[0], 0), (BDFS[1], 0)])
    found = find(environ={"HIP_VISIBLE_DEVICES": "0,2"})
    assert [m.info.detail.split()[:2] for m in found.meters] == [
        [f"bdf={BDFS[2]}", "hip_id=0"],
        [f"bdf={BDFS[1]}", "hip_id=2"],
    ]


def test_an_apu_is_metered_for_its_whole_socket_and_the_cpu_is_left_to_it(
    sysfs_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    build_amdgpu_sysfs(sysfs_root, [BDFS[0]])
    build_kfd_topology(sysfs_root, [(BDFS[0], 8)])  # a Ryzen's integrated GPU
    build_powercap(tmp_path / "powercap", sockets=1, vendor="amd")
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(tmp_path / "powercap"))
    found = discover_all(("gpu", "cpu"))
    try:
        assert [(m.info.device, m.info.component) for m in found.meters] == [("gpu0", "gpu")]
        assert "scope=APU" in found.meters[0].info.detail.split()
        [cpu] = [m for m in found.missing if m.component == "cpu"]
        assert "counted in the APU socket figure of gpu0" in cpu.reason
    finally:
        for meter in found.meters:
            meter.close()


def test_an_mi300a_through_amdsmi_is_an_apu(monkeypatch: pytest.MonkeyPatch, find: Opened) -> None:
    install_fake_amdsmi(monkeypatch, [SimulatedAmdGpu(BDFS[0], 0, "AMD Instinct MI300A")])
    [meter] = find().meters
    assert "scope=APU" in meter.info.detail.split()
