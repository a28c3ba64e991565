"""The CPU and DRAM estimate meters, with psutil and /proc/cpuinfo faked at their boundary."""

from __future__ import annotations

import platform
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from backends import cpu_estimate
from backends.cpu_estimate import DEFAULT_CPU_TDP_W, find_cpu_estimate
from backends.memory import DEFAULT_WATTS_PER_GB, find_memory_estimate

GIB = 1024**3


def _cpuinfo(tmp_path: Path, model: str, sockets: int = 1) -> Path:
    blocks = [
        f"processor\t: {i}\nmodel name\t: {model}\nphysical id\t: {i % sockets}\n"
        for i in range(2 * sockets)
    ]
    path = tmp_path / "cpuinfo"
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


@pytest.fixture
def cpu_percent(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """psutil.cpu_percent returning queued values; the first value answers the priming call."""
    values: list[float] = []
    calls: list[float | None] = []

    def fake(interval: float | None = None) -> float:
        calls.append(interval)
        assert interval is None, "the meter must never block"
        return values.pop(0)

    monkeypatch.setattr(psutil, "cpu_percent", fake)
    return values


def test_cpu_estimate_is_table_tdp_times_machine_utilisation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_percent: list[float]
) -> None:
    monkeypatch.setattr(
        cpu_estimate, "CPUINFO_PATH", _cpuinfo(tmp_path, "AMD EPYC 7763 64-Core Processor")
    )
    cpu_percent.extend([0.0, 50.0, 25.0])
    found = find_cpu_estimate()
    assert found.missing == []
    (meter,) = found.meters
    assert meter.info.component == "cpu"
    assert meter.info.device == "cpu"
    assert meter.info.method == "estimate"
    assert meter.info.host_level is True
    assert meter.fast is False  # never read on the training thread
    assert meter.info.model == "AMD EPYC 7763 64-Core Processor"
    assert "280 W (AMD EPYC 7763)" in meter.info.detail
    assert meter.read().power_w == pytest.approx(140.0)
    assert meter.read().power_w == pytest.approx(70.0)
    assert cpu_percent == []


def test_cpu_estimate_multiplies_tdp_by_socket_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_percent: list[float]
) -> None:
    path = _cpuinfo(tmp_path, "Intel(R) Xeon(R) Platinum 8480+", sockets=2)
    monkeypatch.setattr(cpu_estimate, "CPUINFO_PATH", path)
    cpu_percent.extend([0.0, 100.0])
    (meter,) = find_cpu_estimate().meters
    assert meter.read().power_w == pytest.approx(700.0)
    assert "x 2 sockets" in meter.info.detail


def test_unknown_cpu_uses_the_default_tdp_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_percent: list[float]
) -> None:
    monkeypatch.setattr(cpu_estimate, "CPUINFO_PATH", _cpuinfo(tmp_path, "QEMU Virtual CPU"))
    cpu_percent.extend([0.0, 40.0])
    (meter,) = find_cpu_estimate().meters
    assert meter.info.detail.startswith(
        f"TDP unknown for QEMU Virtual CPU, assumed {DEFAULT_CPU_TDP_W:g} W"
    )
    assert meter.read().power_w == pytest.approx(DEFAULT_CPU_TDP_W * 0.4)


def test_missing_cpuinfo_falls_back_to_platform_processor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_percent: list[float]
) -> None:
    monkeypatch.setattr(cpu_estimate, "CPUINFO_PATH", tmp_path / "absent")
    monkeypatch.setattr(platform, "processor", lambda: "Intel Core i9-13900K")
    cpu_percent.extend([0.0, 100.0])
    (meter,) = find_cpu_estimate().meters
    assert meter.info.model == "Intel Core i9-13900K"
    assert meter.read().power_w == pytest.approx(125.0)


def test_overrides_fix_tdp_and_utilisation_without_touching_psutil(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_percent: list[float]
) -> None:
    monkeypatch.setattr(cpu_estimate, "CPUINFO_PATH", _cpuinfo(tmp_path, "AMD EPYC 7763"))
    (meter,) = find_cpu_estimate(tdp_w=200.0, utilisation=0.25).meters
    assert meter.read().power_w == pytest.approx(50.0)
    assert "TDP 200 W given" in meter.info.detail
    assert "utilisation 0.25 (given)" in meter.info.detail


def test_tdp_override_with_measured_utilisation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_percent: list[float]
) -> None:
    monkeypatch.setattr(cpu_estimate, "CPUINFO_PATH", _cpuinfo(tmp_path, "QEMU Virtual CPU"))
    cpu_percent.extend([0.0, 30.0])
    (meter,) = find_cpu_estimate(tdp_w=100.0).meters
    assert meter.read().power_w == pytest.approx(30.0)


@pytest.mark.parametrize("tdp_w", [0.0, -5.0, float("nan"), float("inf")])
def test_invalid_tdp_override_is_rejected_by_name(tdp_w: float) -> None:
    with pytest.raises(ValueError, match="tdp_w"):
        find_cpu_estimate(tdp_w=tdp_w)


@pytest.mark.parametrize("utilisation", [-0.1, 1.01, float("nan")])
def test_invalid_utilisation_override_is_rejected_by_name(utilisation: float) -> None:
    with pytest.raises(ValueError, match="utilisation"):
        find_cpu_estimate(utilisation=utilisation)


def test_cpu_utilisation_reading_is_clamped_to_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cpu_percent: list[float]
) -> None:
    monkeypatch.setattr(cpu_estimate, "CPUINFO_PATH", _cpuinfo(tmp_path, "AMD EPYC 7763"))
    cpu_percent.extend([0.0, 100.4])
    (meter,) = find_cpu_estimate().meters
    assert meter.read().power_w == pytest.approx(280.0)


def test_memory_estimate_is_watts_per_gb_times_installed_memory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(
        psutil, "virtual_memory", lambda: SimpleNamespace(total=64 * GIB, used=10 * GIB)
    )
    (meter,) = find_memory_estimate().meters
    assert meter.info.component == "dram"
    assert meter.info.device == "dram"
    assert meter.info.method == "estimate"
    assert meter.info.host_level is True
    reading = meter.read()
    assert reading.energy_j is None
    assert reading.power_w == pytest.approx(64 * DEFAULT_WATTS_PER_GB)
    assert meter.info.detail == "64.0 GB installed x 0.3725 W/GB"


def test_memory_estimate_takes_another_figure_per_gb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(psutil, "virtual_memory", lambda: SimpleNamespace(total=8 * GIB))
    (meter,) = find_memory_estimate(watts_per_gb=3 / 8).meters
    assert meter.read().power_w == pytest.approx(3.0)


@pytest.mark.parametrize("watts_per_gb", [0.0, -1.0, float("nan"), float("inf")])
def test_invalid_watts_per_gb_is_rejected_by_name(watts_per_gb: float) -> None:
    with pytest.raises(ValueError, match="watts_per_gb"):
        find_memory_estimate(watts_per_gb=watts_per_gb)


def test_default_watts_per_gb_is_the_green_algorithms_figure() -> None:
    assert DEFAULT_WATTS_PER_GB == 0.3725
