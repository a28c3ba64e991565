"""The NVML backend against a simulated NVML: meter choice, exact energy, GPU mapping, failures."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pynvml
import pytest

from backends.base import (
    Found,
    Meter,
    MeterError,
    MeterPermissionError,
    MeterReadError,
    MeterUnavailable,
)
from backends.gpu.nvidia import NO_NVML_REASON, find_gpus
from tests.fake_nvml import (
    SimulatedGPU,
    constant_power,
    hopper,
    install_fake_nvml,
    install_no_nvml,
    step_profile,
)

H100 = "NVIDIA H100 80GB HBM3"
A100 = "NVIDIA A100-SXM4-40GB"
P100 = "Tesla P100-PCIE-16GB"
UUIDS = (
    "GPU-8f3a0c11-52d4-4e1e-9c0a-1d2e3f405162",
    "GPU-8f3b77e0-0b1c-4d2e-8f30-415263748596",
    "GPU-8f3c1234-aaaa-bbbb-cccc-ddddeeeeffff",
    "GPU-d00d5eed-1111-2222-3333-444455556666",
)


class Discover:
    """Runs ``find_gpus`` and remembers what it opened, so every meter is closed after the test."""

    def __init__(self) -> None:
        self.opened: list[Found] = []

    def __call__(
        self, wanted: Sequence[int | str] | None = None, visible: str | None = None
    ) -> Found:
        found = find_gpus(wanted, visible)
        self.opened.append(found)
        return found

    def close_all(self) -> None:
        for found in self.opened:
            for meter in found.meters:
                meter.close()


@pytest.fixture
def discover() -> Iterator[Discover]:
    opener = Discover()
    yield opener
    opener.close_all()


@pytest.fixture(autouse=True)
def clean_cuda_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)


def four_gpus() -> list[SimulatedGPU]:
    """Physical GPU i draws 100 + i watts, so a meter's power tells which GPU it reads."""
    return [SimulatedGPU(uuid=UUIDS[i], power_w=constant_power(100.0 + i)) for i in range(4)]


def physical_indices(found: Found) -> list[int]:
    return [round(_power_w(meter)) - 100 for meter in found.meters]


def _power_w(meter: Meter) -> float:
    power_w = meter.power_hint_w() if meter.info.method == "counter" else meter.read().power_w
    assert power_w is not None
    return power_w


# --- which meter a GPU gets ---------------------------------------------------------------------


def test_gpu_with_energy_counter_gets_a_slow_counter_meter(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, [SimulatedGPU(uuid=UUIDS[0])])
    found = discover()
    assert found.missing == []
    [meter] = found.meters
    assert (meter.info.device, meter.info.component, meter.info.model) == ("gpu0", "gpu", H100)
    assert meter.info.method == "counter"
    assert meter.info.host_level is False
    assert UUIDS[0] in meter.info.detail
    assert "nvml_index=0" in meter.info.detail
    assert meter.fast is False
    reading = meter.read()
    assert reading.energy_j is not None
    assert reading.power_w is None


def test_gpu_without_energy_counter_falls_back_to_power_polling(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    gpu = SimulatedGPU(name=P100, has_counter=False, power_w=constant_power(125.5))
    install_fake_nvml(monkeypatch, [gpu])
    [meter] = discover().meters
    assert meter.info.method == "power"
    assert meter.info.model == P100
    assert meter.fast is True
    reading = meter.read()
    assert reading.power_w == 125.5
    assert reading.energy_j is None


def test_gpu_with_neither_counter_nor_power_is_missing(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, [SimulatedGPU(has_counter=False, has_power=False)])
    found = discover()
    assert found.meters == []
    [missing] = found.missing
    assert (missing.component, missing.device) == ("gpu", "gpu0")
    assert "neither an energy counter nor its power draw" in missing.reason


def test_model_name_given_as_bytes_is_decoded(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, [SimulatedGPU()])
    monkeypatch.setattr(pynvml, "nvmlDeviceGetName", lambda handle: b"Tesla V100-SXM2-16GB")
    [meter] = discover().meters
    assert meter.info.model == "Tesla V100-SXM2-16GB"


# --- values ---------------------------------------------------------------------------------------


def test_counter_meter_reads_the_simulated_energy_in_joules(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    t0 = time.monotonic()
    gpu = SimulatedGPU(power_w=step_profile([(t0, 100.0), (t0 + 0.02, 400.0)]))
    install_fake_nvml(monkeypatch, [gpu])
    [meter] = discover().meters
    first = meter.read()
    time.sleep(0.04)
    second = meter.read()
    taken_first, taken_second = gpu.counter_reads_s[-2:]
    assert first.energy_j == gpu.counter_mj(taken_first) / 1000
    assert second.energy_j is not None and first.energy_j is not None
    used_j = second.energy_j - first.energy_j
    assert used_j == pytest.approx(gpu.energy_j(taken_first, taken_second), abs=1e-3)
    assert used_j > 100.0 * 0.04


def test_counter_meter_follows_a_load_that_changes_as_it_runs(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    gpu = hopper(constant_power(90.0))  # as the benchmarks drive their boards
    install_fake_nvml(monkeypatch, [gpu])
    [meter] = discover().meters
    first = meter.read()
    gpu.power_w.set(600.0)
    time.sleep(0.25)
    gpu.power_w.set(90.0)
    time.sleep(0.15)
    second = meter.read()
    assert second.energy_j is not None and first.energy_j is not None
    taken_first, taken_second = gpu.counter_reads_s[-2:]
    edges = [gpu.last_update_s(taken_first), gpu.last_update_s(taken_second)]
    assert second.energy_j - first.energy_j == pytest.approx(gpu.energy_j(*edges), abs=1e-3)
    assert second.energy_j - first.energy_j > 600.0 * 0.15  # the busy stretch is in it


def test_power_meter_reads_the_simulated_power_in_watts(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    t0 = time.monotonic()
    gpu = SimulatedGPU(has_counter=False, power_w=step_profile([(t0, 50.0), (t0 + 0.02, 250.0)]))
    install_fake_nvml(monkeypatch, [gpu])
    [meter] = discover().meters
    time.sleep(0.03)
    assert meter.read().power_w == 250.0


def test_reading_is_timestamped_when_the_nvml_call_returns(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    gpu = SimulatedGPU(read_delay_s=0.03)
    install_fake_nvml(monkeypatch, [gpu])
    [meter] = discover().meters
    called_s = time.monotonic()
    reading = meter.read()
    value_taken_s = gpu.counter_reads_s[-1]
    assert reading.t_s - called_s >= 0.03
    assert value_taken_s <= reading.t_s < value_taken_s + 0.01


def test_counter_meter_power_hint_is_the_current_power_in_watts(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, [SimulatedGPU(power_w=constant_power(287.25))])
    [meter] = discover().meters
    assert meter.power_hint_w() == 287.25


def test_counter_meter_power_hint_is_none_where_power_cannot_be_read(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, [SimulatedGPU(has_power=False)])
    [meter] = discover().meters
    assert meter.power_hint_w() is None


def test_counter_meter_instant_power_is_the_field_in_watts_lagging_as_modelled(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    now_s = time.monotonic()
    profile = step_profile([(now_s - 10.0, 100.0), (now_s - 0.001, 500.0)])
    gpu = SimulatedGPU(power_w=profile, instant_lag_s=0.2)
    install_fake_nvml(monkeypatch, [gpu])
    [meter] = discover().meters
    assert meter.instant_power_w() == 100.0  # the field still shows the power 0.2 s ago
    gpu.instant_lag_s = 0.0
    assert meter.instant_power_w() == 500.0


def test_counter_meter_without_the_instant_field_asks_once_and_says_none(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    nvml = install_fake_nvml(monkeypatch, [SimulatedGPU(has_instant=False)])
    [meter] = discover().meters
    asked: list[object] = []
    answer = nvml.nvmlDeviceGetFieldValues

    def counted(handle: SimulatedGPU, fields: list[int]) -> object:
        asked.append(fields)
        return answer(handle, fields)

    monkeypatch.setattr(pynvml, "nvmlDeviceGetFieldValues", counted)
    assert meter.instant_power_w() is None
    assert meter.instant_power_w() is None
    assert len(asked) == 1
    meter.close()
    assert meter.instant_power_w() is None


def test_instant_power_far_above_the_power_limit_is_no_reading(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    gpu = SimulatedGPU(power_w=constant_power(4_294_967.295))  # the field's "no value"
    install_fake_nvml(monkeypatch, [gpu])
    [meter] = discover().meters
    assert meter.max_power_w == 700.0  # the simulated H100's enforced limit
    assert meter.instant_power_w() is None
    gpu.power_w = constant_power(1500.0)  # over twice the limit: a bad reading, not power
    assert meter.instant_power_w() is None
    gpu.power_w = constant_power(650.0)
    assert meter.instant_power_w() == 650.0


def test_step_profile_energy_is_the_exact_integral() -> None:
    profile = step_profile([(10.0, 100.0), (12.0, 300.0)])
    assert profile(9.0) == 100.0
    assert profile(12.0) == 300.0
    assert profile.energy_j(9.0, 13.0) == 100.0 * 3 + 300.0 * 1
    counter = SimulatedGPU(power_w=profile, counter_origin_s=11.5)
    assert counter.counter_mj(12.25) == 125_000
    assert counter.counter_mj(12.0 + 1 / 1024) == 50_292  # 50_292.96875 mJ, floored


# --- which GPUs: CUDA_VISIBLE_DEVICES and gpus= ------------------------------------------------


def test_unset_visible_devices_exposes_every_gpu_in_nvml_order(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, four_gpus())
    found = discover()
    assert [meter.info.device for meter in found.meters] == ["gpu0", "gpu1", "gpu2", "gpu3"]
    assert physical_indices(found) == [0, 1, 2, 3]


def test_visible_device_indices_map_in_order_to_physical_gpus(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, four_gpus())
    found = discover(visible="2,0")
    assert [meter.info.device for meter in found.meters] == ["gpu0", "gpu1"]
    assert physical_indices(found) == [2, 0]


@pytest.mark.parametrize("visible", [f"{UUIDS[3]},{UUIDS[2]}", "GPU-d00d, GPU-8f3c"])
def test_visible_device_uuids_and_unique_prefixes_select_those_gpus(
    monkeypatch: pytest.MonkeyPatch, discover: Discover, visible: str
) -> None:
    install_fake_nvml(monkeypatch, four_gpus())
    found = discover(visible=visible)
    assert [meter.info.device for meter in found.meters] == ["gpu0", "gpu1"]
    assert physical_indices(found) == [3, 2]


def test_visible_devices_default_to_the_environment(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, four_gpus())
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert physical_indices(discover()) == [1]


def test_empty_visible_devices_means_no_gpus_and_nothing_missing(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, four_gpus())
    found = discover(visible="")
    assert (found.meters, found.missing) == ([], [])


def test_machine_with_zero_gpus_gives_no_meters_and_nothing_missing(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, [])
    found = discover()
    assert (found.meters, found.missing) == ([], [])


def test_visible_device_that_does_not_exist_is_missing_and_hides_the_rest(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, four_gpus())
    found = discover(visible="0,7,1")
    assert physical_indices(found) == [0]
    [missing] = found.missing
    assert missing.device == "gpu1"
    assert "'7'" in missing.reason
    assert UUIDS[3] in missing.fix


def test_visible_device_on_a_machine_without_gpus_is_missing(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, [])
    found = discover(visible="0")
    assert found.meters == []
    assert [missing.device for missing in found.missing] == ["gpu0"]


def test_minus_one_hides_the_rest_without_anything_missing(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, four_gpus())
    found = discover(visible="0,-1,1")
    assert physical_indices(found) == [0]
    assert found.missing == []


def test_ambiguous_uuid_prefix_is_missing(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, four_gpus())
    found = discover(visible="GPU-8f3")
    assert found.meters == []
    [missing] = found.missing
    assert "matches 3 GPUs" in missing.reason


def test_wanted_gpus_are_picked_by_index_or_uuid_in_the_given_order(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, four_gpus())
    found = discover(wanted=[3, "GPU-8f3b", "3"])
    assert [meter.info.device for meter in found.meters] == ["gpu3", "gpu1"]
    assert physical_indices(found) == [3, 1]


def test_wanted_index_counts_within_the_visible_devices(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, four_gpus())
    found = discover(wanted=[1], visible="2,3")
    assert [meter.info.device for meter in found.meters] == ["gpu1"]
    assert physical_indices(found) == [3]


@pytest.mark.parametrize("wanted", [[5], ["GPU-ffff"], [-1], ["first"]])
def test_wanted_gpu_that_does_not_exist_raises_value_error_listing_the_available_ones(
    monkeypatch: pytest.MonkeyPatch, discover: Discover, wanted: list[int | str]
) -> None:
    nvml = install_fake_nvml(monkeypatch, four_gpus()[:2])
    with pytest.raises(ValueError, match=r"^gpus: ") as error:
        discover(wanted=wanted)
    assert UUIDS[0] in str(error.value)
    assert UUIDS[1] in str(error.value)
    assert not nvml.initialized


# --- what cannot be measured ---------------------------------------------------------------------


def test_mig_slice_in_visible_devices_is_missing_not_measured(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, four_gpus())
    found = discover(visible=f"MIG-{UUIDS[0][4:]},1")
    [missing] = found.missing
    assert (missing.component, missing.device) == ("gpu", "gpu0")
    assert "MIG" in missing.reason
    assert "per-slice energy is not exposed by NVML" in missing.reason
    assert missing.fix
    assert [meter.info.device for meter in found.meters] == ["gpu1"]
    assert physical_indices(found) == [1]


def test_gpu_in_mig_mode_is_missing_not_measured(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    gpus = four_gpus()[:2]
    gpus[0].mig = True
    install_fake_nvml(monkeypatch, gpus)
    found = discover()
    [missing] = found.missing
    assert missing.device == "gpu0"
    assert "per-slice energy is not exposed by NVML" in missing.reason
    assert [meter.info.device for meter in found.meters] == ["gpu1"]
    assert gpus[0].counter_reads_s == []


def test_gpu_that_cannot_report_mig_mode_is_measured(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, [SimulatedGPU(mig_capable=False)])
    found = discover()
    assert found.missing == []
    assert [meter.info.method for meter in found.meters] == ["counter"]


@pytest.mark.parametrize(
    "error",
    [
        pynvml.NVMLError_LibraryNotFound(),
        pynvml.NVMLError_DriverNotLoaded(),
        OSError("libnvidia-ml.so.1: cannot open shared object file"),
    ],
    ids=["library-not-found", "driver-not-loaded", "os-error"],
)
def test_no_nvml_is_missing_not_an_exception(
    monkeypatch: pytest.MonkeyPatch, discover: Discover, error: Exception
) -> None:
    install_no_nvml(monkeypatch, error)
    found = discover(wanted=[0])
    assert found.meters == []
    [missing] = found.missing
    assert (missing.component, missing.device) == ("gpu", "gpu")
    assert missing.reason.startswith(NO_NVML_REASON)
    assert "driver" in missing.fix


def test_gpu_failing_during_discovery_is_missing_not_an_exception(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    gpus = four_gpus()[:2]
    gpus[1].fail_after_s = 0.0
    install_fake_nvml(monkeypatch, gpus)
    found = discover()
    assert [meter.info.device for meter in found.meters] == ["gpu0"]
    [missing] = found.missing
    assert missing.device == "gpu1"
    assert "GPU is lost" in missing.reason


@pytest.mark.parametrize(
    ("has_counter", "call"),
    [(True, "nvmlDeviceGetTotalEnergyConsumption"), (False, "nvmlDeviceGetPowerUsage")],
)
def test_gpu_lost_mid_run_raises_meter_unavailable_naming_device_call_and_cause(
    monkeypatch: pytest.MonkeyPatch, discover: Discover, has_counter: bool, call: str
) -> None:
    gpu = SimulatedGPU(uuid=UUIDS[0], has_counter=has_counter)
    install_fake_nvml(monkeypatch, [gpu])
    [meter] = discover().meters
    meter.read()
    gpu.fail_after_s = time.monotonic()
    with pytest.raises(MeterUnavailable) as error:
        meter.read()
    message = str(error.value)
    assert message.startswith("gpu0 ")
    assert UUIDS[0] in message
    assert f"{call} failed: GPU is lost (NVML_ERROR_GPU_IS_LOST)" in message
    assert isinstance(error.value.__cause__, pynvml.NVMLError_GpuIsLost)
    assert meter.power_hint_w() is None


@pytest.mark.parametrize(
    ("code", "kind", "cause"),
    [
        (pynvml.NVML_ERROR_NO_PERMISSION, MeterPermissionError, "Insufficient Permissions"),
        (pynvml.NVML_ERROR_UNKNOWN, MeterReadError, "Unknown Error"),
        (pynvml.NVML_ERROR_TIMEOUT, MeterReadError, "Timeout"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, MeterUnavailable, "Driver Not Loaded"),
    ],
)
def test_nvml_error_mid_run_raises_the_meter_error_its_code_means(
    monkeypatch: pytest.MonkeyPatch,
    discover: Discover,
    code: int,
    kind: type[MeterError],
    cause: str,
) -> None:
    gpu = SimulatedGPU(uuid=UUIDS[0], fail_with=code)
    install_fake_nvml(monkeypatch, [gpu])
    [meter] = discover().meters
    gpu.fail_after_s = time.monotonic()
    with pytest.raises(MeterError) as error:
        meter.read()
    assert type(error.value) is kind
    assert str(error.value).startswith(f"gpu0 (uuid={UUIDS[0]} nvml_index=0): ")
    assert cause in str(error.value)
    assert error.value.__cause__ == pynvml.NVMLError(code)


def test_nvml_shut_down_under_a_meter_raises_meter_unavailable(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    nvml = install_fake_nvml(monkeypatch, [SimulatedGPU()])
    [meter] = discover().meters
    nvml.nvmlShutdown()  # another NVML user in the process shut it down once too often
    with pytest.raises(MeterUnavailable, match=r"Uninitialized \(NVML_ERROR_UNINITIALIZED\)"):
        meter.read()


# --- NVML session ---------------------------------------------------------------------------------


def test_nvml_is_initialised_once_and_shut_down_by_the_last_close(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    nvml = install_fake_nvml(monkeypatch, four_gpus()[:2])
    meters = discover().meters + discover().meters
    assert len(meters) == 4
    assert nvml.init_calls == 1
    meters[0].close()
    meters[0].close()  # a second close gives nothing back twice
    for meter in meters[1:-1]:
        meter.close()
    assert nvml.initialized
    assert nvml.shutdown_calls == 0
    meters[-1].close()
    assert not nvml.initialized
    assert (nvml.init_calls, nvml.shutdown_calls) == (1, 1)


def test_discovery_that_opens_no_meter_leaves_nvml_shut_down(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    nvml = install_fake_nvml(monkeypatch, four_gpus())
    discover(visible="")
    assert (nvml.init_calls, nvml.shutdown_calls) == (1, 1)
    assert not nvml.initialized


def test_read_after_close_raises_meter_unavailable(
    monkeypatch: pytest.MonkeyPatch, discover: Discover
) -> None:
    install_fake_nvml(monkeypatch, [SimulatedGPU()])
    [meter] = discover().meters
    meter.close()
    with pytest.raises(MeterUnavailable, match="gpu0: read after close"):
        meter.read()


def test_importing_the_backend_does_not_initialise_nvml() -> None:
    probe = (
        "import pynvml\n"
        "def refuse():\n"
        "    raise SystemExit('nvmlInit called at import')\n"
        "pynvml.nvmlInit = refuse\n"
        "import backends.gpu.nvidia\n"
    )
    root = Path(__file__).resolve().parents[3]
    result = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("order", "visible", "warns"),
    [(None, None, True), (None, "1,0", True), ("PCI_BUS_ID", None, False), (None, UUIDS[1], False)],
)
def test_mixed_gpu_models_chosen_by_index_warn_that_cuda_may_number_them_differently(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    discover: Discover,
    order: str | None,
    visible: str | None,
    warns: bool,
) -> None:
    gpus = four_gpus()[:2]
    gpus[1].name = A100
    install_fake_nvml(monkeypatch, gpus)
    if order is not None:
        monkeypatch.setenv("CUDA_DEVICE_ORDER", order)
    found = discover(visible=visible)
    notes = [n for n in found.notes if "CUDA_DEVICE_ORDER" in n]
    assert bool(notes) is warns
    assert not [
        r for r in caplog.records if "CUDA_DEVICE_ORDER" in r.getMessage()
    ]  # kept, not logged
