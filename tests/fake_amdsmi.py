"""A simulated AMD SMI, installed as the ``amdsmi`` module so everything above it runs for real.

``install_fake_amdsmi(monkeypatch, gpus)`` puts a module object named ``amdsmi`` into
``sys.modules`` for the length of a test. It has the calls, enums and exceptions the AMD SMI Python
API reference gives (``amdsmi_init``, ``amdsmi_get_processor_handles``, ``amdsmi_get_energy_count``,
``amdsmi_get_power_info``, ``AmdSmiLibraryException`` with ``err_code``, ``AmdSmiRetCode``, ...),
answering for the simulated GPUs in the order given (amd-smi lists GPUs in PCI bus order).

Each GPU's sensor draws a ``StepProfile`` (``tests.fake_nvml``), so the energy between two moments
is known exactly. Its accumulator counts whole ``counter_resolution`` uJ units from
``counter_origin_s`` (or from a reset); its power field holds whole watts, the other power fields
``"N/A"``, as an ASIC of that generation reports them.
"""

from __future__ import annotations

import enum
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import TYPE_CHECKING, Any

from tests.fake_nvml import StepProfile, constant_power

if TYPE_CHECKING:
    import pytest

MI300X = "AMD Instinct MI300X"
MI250X = "AMD Instinct MI250X"
MI100 = "AMD Instinct MI100"
RESOLUTION_UJ = 15.259  # 2^-16 J, as the boards report it
POWER_FIELDS = ("socket_power", "current_socket_power", "average_socket_power")


class AmdSmiRetCode(enum.IntEnum):
    """The ``amdsmi_status_t`` codes (amdsmi.h) a test needs, named as amdsmi 6.x and later do."""

    SUCCESS = 0
    STATUS_INVAL = 1
    STATUS_NOT_SUPPORTED = 2
    STATUS_NOT_YET_IMPLEMENTED = 3
    STATUS_FAIL_LOAD_MODULE = 4
    STATUS_TIMEOUT = 8
    STATUS_RETRY = 9
    STATUS_NO_PERM = 10
    STATUS_IO = 12
    STATUS_INIT_ERROR = 18
    STATUS_BUSY = 30
    STATUS_NOT_FOUND = 31
    STATUS_NOT_INIT = 32
    STATUS_UNKNOWN_ERROR = 0xFFFFFFFF


class AmdSmiException(Exception):
    """Base of every AMD SMI exception."""


class AmdSmiLibraryException(AmdSmiException):
    """A status the library returned, as the real class carries it (``err_code``)."""

    def __init__(self, err_code: int) -> None:
        super().__init__(err_code)
        self.err_code = abs(err_code)
        self.err_info = AmdSmiRetCode(self.err_code).name

    def __str__(self) -> str:
        return f"An error occurred with code: {self.err_code}({self.err_info})"

    def get_error_code(self) -> int:
        return self.err_code


@dataclass
class SimulatedAmdGpu:
    """One simulated AMD GPU (or MI250 GCD) as amdsmi shows it.

    ``power_w`` is what its sensor reads (on an MI250 the first GCD's sensor reads the package,
    the second's about 0). ``energy_key`` is the accumulator's key (``power`` before ROCm 6.4; None:
    no counter, NOT_SUPPORTED); ``counter_stuck`` a counter that never moves (MI100).
    ``power_field`` is the power info key holding the watts (None: every field ``"N/A"``).
    From ``fail_after_s`` every call on the GPU raises ``fail_with``; from ``reset_at_s`` the
    accumulator counts again from 0 (a GPU reset). ``call_delay_s`` makes each call take time, so
    that overlapping calls from two threads would show in ``max_concurrent``.
    """

    bdf: str
    hip_id: int | None = None
    market_name: str = MI300X
    uuid: str = ""
    hip_uuid: str = ""
    kfd_node: int | None = None
    power_w: StepProfile = field(default_factory=lambda: constant_power(300.0))
    energy_key: str | None = "energy_accumulator"
    counter_resolution: float = RESOLUTION_UJ
    counter_stuck: bool = False
    counter_origin_s: float = 0.0
    power_field: str | None = "current_socket_power"
    fail_after_s: float | None = None
    fail_with: AmdSmiRetCode = AmdSmiRetCode.STATUS_NOT_FOUND
    fail_power_only: bool = False
    reset_at_s: float | None = None
    call_delay_s: float = 0.0
    counter_reads_s: list[float] = field(default_factory=list, init=False)
    power_reads_s: list[float] = field(default_factory=list, init=False)

    def energy_j(self, t0_s: float, t1_s: float) -> float:
        """The exact energy the sensor saw between two monotonic times, in joules."""
        return self.power_w.energy_j(t0_s, t1_s)

    def accumulator(self, t_s: float) -> int:
        """The counter at ``t_s``, in whole ``counter_resolution`` units."""
        if self.counter_stuck:
            return 123_456
        origin_s = self.counter_origin_s
        if self.reset_at_s is not None and t_s >= self.reset_at_s:
            origin_s = self.reset_at_s
        return math.floor(self.energy_j(origin_s, t_s) * 1e6 / self.counter_resolution)


class SimulatedAmdSmi:
    """The AMD SMI library over simulated GPUs; handles are the GPU objects.

    ``enumeration=False`` is a ROCm before 6.4 (no ``amdsmi_get_gpu_enumeration_info``).
    ``init_error`` makes ``amdsmi_init`` raise that status. ``init_calls`` and
    ``shutdown_calls`` count calls; ``max_concurrent`` is the most calls ever in flight at once.
    """

    def __init__(
        self,
        gpus: Sequence[SimulatedAmdGpu],
        enumeration: bool = True,
        init_error: AmdSmiRetCode | None = None,
    ) -> None:
        self.gpus = list(gpus)
        self.enumeration = enumeration
        self.init_error = init_error
        self.init_calls = 0
        self.shutdown_calls = 0
        self.max_concurrent = 0
        self._count = 0
        self._in_flight = 0
        self._flight_lock = threading.Lock()

    @property
    def initialized(self) -> bool:
        return self._count > 0

    def module(self) -> ModuleType:
        """The ``amdsmi`` module object answering from this simulation."""
        module = ModuleType("amdsmi")
        names: dict[str, Any] = {
            "AmdSmiRetCode": AmdSmiRetCode,
            "AmdSmiException": AmdSmiException,
            "AmdSmiLibraryException": AmdSmiLibraryException,
            "AmdSmiInitFlags": SimpleNamespace(INIT_ALL_PROCESSORS=0xFFFFFFFF, INIT_AMD_GPUS=2),
            "amdsmi_init": self.amdsmi_init,
            "amdsmi_shut_down": self.amdsmi_shut_down,
            "amdsmi_get_processor_handles": self._library(lambda: list(self.gpus)),
            "amdsmi_get_gpu_device_bdf": self._device(lambda gpu: gpu.bdf),
            "amdsmi_get_gpu_device_uuid": self._device(lambda gpu: gpu.uuid),
            "amdsmi_get_gpu_asic_info": self._device(
                lambda gpu: {"market_name": gpu.market_name, "vendor_id": 0x1002}
            ),
            "amdsmi_get_gpu_kfd_info": self._device(
                lambda gpu: {"kfd_id": 1000 + (gpu.kfd_node or 0), "node_id": gpu.kfd_node}
            ),
            "amdsmi_get_energy_count": self._device(self._energy_count),
            "amdsmi_get_power_info": self._device(self._power_info),
        }
        if self.enumeration:
            names["amdsmi_get_gpu_enumeration_info"] = self._device(
                lambda gpu: {
                    "drm_card": gpu.hip_id,
                    "drm_render": 128 + (gpu.hip_id or 0),
                    "hsa_id": None if gpu.hip_id is None else gpu.hip_id + 1,
                    "hip_id": gpu.hip_id,
                    "hip_uuid": gpu.hip_uuid or "N/A",
                }
            )
        for name, value in names.items():
            setattr(module, name, value)
        return module

    def amdsmi_init(self, flags: int = 0) -> None:
        self.init_calls += 1
        if self.init_error is not None:
            raise AmdSmiLibraryException(self.init_error)
        self._count += 1

    def amdsmi_shut_down(self) -> None:
        self.shutdown_calls += 1
        self._count = max(self._count - 1, 0)

    def _energy_count(self, gpu: SimulatedAmdGpu) -> dict[str, Any]:
        if gpu.energy_key is None:
            raise AmdSmiLibraryException(AmdSmiRetCode.STATUS_NOT_SUPPORTED)
        t_s = time.monotonic()
        gpu.counter_reads_s.append(t_s)
        return {
            gpu.energy_key: gpu.accumulator(t_s),
            "counter_resolution": gpu.counter_resolution,
            "timestamp": int(t_s * 1e9),
        }

    def _power_info(self, gpu: SimulatedAmdGpu) -> dict[str, Any]:
        if gpu.fail_power_only:
            raise AmdSmiLibraryException(gpu.fail_with)
        t_s = time.monotonic()
        gpu.power_reads_s.append(t_s)
        info: dict[str, Any] = dict.fromkeys(POWER_FIELDS, "N/A")
        if gpu.power_field is not None:
            info[gpu.power_field] = round(gpu.power_w(t_s))
        return info | {"gfx_voltage": 800, "soc_voltage": 900, "mem_voltage": 1100}

    def _library(self, call: Callable[[], Any]) -> Callable[[], Any]:
        def library_call() -> Any:
            if not self.initialized:
                raise AmdSmiLibraryException(AmdSmiRetCode.STATUS_NOT_INIT)
            return call()

        return library_call

    def _device(self, call: Callable[[SimulatedAmdGpu], Any]) -> Callable[[Any], Any]:
        """A device query, after the checks the library makes; it records overlapping calls."""

        def device_call(handle: Any) -> Any:
            with self._flight_lock:
                self._in_flight += 1
                self.max_concurrent = max(self.max_concurrent, self._in_flight)
            try:
                if not self.initialized:
                    raise AmdSmiLibraryException(AmdSmiRetCode.STATUS_NOT_INIT)
                if not any(handle is gpu for gpu in self.gpus):
                    raise AmdSmiLibraryException(AmdSmiRetCode.STATUS_INVAL)
                gpu: SimulatedAmdGpu = handle
                if gpu.call_delay_s:
                    time.sleep(gpu.call_delay_s)
                failing = gpu.fail_after_s is not None and time.monotonic() >= gpu.fail_after_s
                if failing and not gpu.fail_power_only:
                    raise AmdSmiLibraryException(gpu.fail_with)
                return call(gpu)
            finally:
                with self._flight_lock:
                    self._in_flight -= 1

        return device_call


def install_fake_amdsmi(
    monkeypatch: pytest.MonkeyPatch,
    gpus: Sequence[SimulatedAmdGpu],
    enumeration: bool = True,
    init_error: AmdSmiRetCode | None = None,
) -> SimulatedAmdSmi:
    """Make ``import amdsmi`` give a simulation of exactly these GPUs until the test ends."""
    smi = SimulatedAmdSmi(gpus, enumeration, init_error)
    monkeypatch.setitem(sys.modules, "amdsmi", smi.module())
    return smi


@dataclass
class FakeAmdgpuCard:
    """One amdgpu card in a fake sysfs tree: its PCI device directory and hwmon power files."""

    device_dir: Path
    hwmon_dir: Path

    def set_power_w(self, watts: float, name: str = "power1_average") -> None:
        """What the hwmon power file reads from now on (the kernel writes uW)."""
        (self.hwmon_dir / name).write_text(f"{round(watts * 1e6)}\n")


def build_amdgpu_sysfs(
    root: Path,
    bdfs: Sequence[str],
    power_file: str = "power1_average",
    product_name: str = "",
    unique_ids: Sequence[str] = (),
) -> list[FakeAmdgpuCard]:
    """A sysfs tree under ``root`` with an amdgpu card per PCI address, as the kernel lays it out.

    ``class/drm/cardN/device`` links to the PCI device directory ``devices/pci0000:00/<bdf>``,
    which holds ``vendor`` (0x1002), ``device``, ``product_name``, ``unique_id`` and
    ``hwmon/hwmonM/`` (``name`` ``amdgpu`` and ``power_file``, 100 W to start). Connector entries
    (``card0-DP-1``) and render nodes sit beside the cards, as in the real class directory.
    """
    drm = root / "class" / "drm"
    drm.mkdir(parents=True, exist_ok=True)
    (drm / "renderD128").mkdir(exist_ok=True)
    (drm / "version").write_text("drm 1.1.0 20060810\n")
    cards = []
    for n, bdf in enumerate(bdfs):
        device_dir = root / "devices" / "pci0000:00" / bdf
        hwmon_dir = device_dir / "hwmon" / f"hwmon{n + 3}"
        hwmon_dir.mkdir(parents=True)
        (device_dir / "vendor").write_text("0x1002\n")
        (device_dir / "device").write_text("0x74a1\n")
        if product_name:
            (device_dir / "product_name").write_text(f"{product_name}\n")
        if n < len(unique_ids):
            (device_dir / "unique_id").write_text(f"{unique_ids[n]}\n")
        (hwmon_dir / "name").write_text("amdgpu\n")
        (drm / f"card{n}").mkdir()
        (drm / f"card{n}" / "device").symlink_to(device_dir)
        (drm / f"card{n}-DP-1").mkdir()
        card = FakeAmdgpuCard(device_dir, hwmon_dir)
        card.set_power_w(100.0, power_file)
        cards.append(card)
    return cards


def build_kfd_topology(root: Path, gpus: Sequence[tuple[str, int]]) -> None:
    """The KFD topology under ``root`` (``class/kfd/kfd/topology/nodes``), as ROCr reads it.

    Node 0 is the CPU; nodes 1, 2, ... the GPUs in the order given, each ``(bdf, cpu_cores)``:
    an APU's node has CPU cores as well as SIMDs. Each ``properties`` file holds ``key value``
    lines, the address as ``domain`` and ``location_id`` (bus << 8 | device << 3 | function).
    """
    nodes = root / "class" / "kfd" / "kfd" / "topology" / "nodes"
    cpu = nodes / "0"
    cpu.mkdir(parents=True)
    (cpu / "properties").write_text("cpu_cores_count 64\nsimd_count 0\nlocation_id 0\ndomain 0\n")
    for node, (bdf, cores) in enumerate(gpus, start=1):
        domain, bus, rest = bdf.split(":")
        device, function = rest.split(".")
        location = int(bus, 16) << 8 | int(device, 16) << 3 | int(function)
        (nodes / str(node)).mkdir()
        (nodes / str(node) / "properties").write_text(
            f"cpu_cores_count {cores}\nsimd_count 304\nmem_banks_count 1\ncaches_count 0\n"
            f"io_links_count 1\ncpu_core_id_base 0\nsimd_id_base 2147487744\nmax_waves_per_simd 8\n"
            f"lds_size_in_kb 64\ngds_size_in_kb 0\nwave_front_size 64\narray_count 32\n"
            f"simd_arrays_per_engine 1\ncu_per_simd_array 10\nsimd_per_cu 4\nvendor_id 4098\n"
            f"device_id 29856\nlocation_id {location}\ndomain {int(domain, 16)}\n"
            f"drm_render_minor {127 + node}\nhive_id 0\nnum_sdma_engines 2\nunique_id 9{node}\n"
        )
