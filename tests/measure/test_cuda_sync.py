"""``sync=``: the tracked CUDA devices are synchronised at each edge, and only when they should be.

torch is replaced by a stand-in module in ``sys.modules`` whose ``torch.cuda`` records what was
synchronised; the GPUs are simulated at the NVML boundary, the Tracker runs for real.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

import pytest

from tests.fake_nvml import SimulatedGPU, install_fake_nvml
from tracker import Tracker
from tracker.integrations._hooks import TrackerHooks


class StandInCuda:
    """What ``torch.cuda`` offers the tracker: ``is_initialized`` and ``synchronize``."""

    def __init__(self, initialized: bool, error: Exception | None = None) -> None:
        self.initialized = initialized
        self.error = error
        self.synchronized: list[int] = []

    def is_initialized(self) -> bool:
        return self.initialized

    def synchronize(self, device: int) -> None:
        if self.error is not None:
            raise self.error
        self.synchronized.append(device)


def stand_in_torch(monkeypatch: pytest.MonkeyPatch, cuda: StandInCuda) -> None:
    torch = types.ModuleType("torch")
    torch.cuda = cuda  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "torch", torch)


def one_epoch(tmp_path: Path, **kwargs: Any) -> Tracker:
    tracker = Tracker(
        "sync", str(tmp_path), components=["gpu"], intensity=300.0, verbose=0, **kwargs
    )
    with tracker:
        tracker.epoch_start()
        tracker.epoch_end()
    return tracker


@pytest.fixture
def three_gpus(monkeypatch: pytest.MonkeyPatch) -> list[SimulatedGPU]:
    gpus = [SimulatedGPU(), SimulatedGPU(), SimulatedGPU()]
    install_fake_nvml(monkeypatch, gpus)
    return gpus


def test_auto_synchronises_the_tracked_devices_at_both_edges_once_cuda_is_initialised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, three_gpus: list[SimulatedGPU]
) -> None:
    cuda = StandInCuda(initialized=True)
    stand_in_torch(monkeypatch, cuda)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")  # CUDA sees NVML GPU 2 as 0, 0 as 1
    one_epoch(tmp_path, gpus=[1])
    assert cuda.synchronized == [1, 1]  # epoch_start and epoch_end, CUDA device 1 only


def test_auto_synchronises_every_tracked_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, three_gpus: list[SimulatedGPU]
) -> None:
    cuda = StandInCuda(initialized=True)
    stand_in_torch(monkeypatch, cuda)
    one_epoch(tmp_path)
    assert cuda.synchronized == [0, 1, 2, 0, 1, 2]


def test_auto_leaves_cuda_alone_until_it_is_initialised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, three_gpus: list[SimulatedGPU]
) -> None:
    cuda = StandInCuda(initialized=False)
    stand_in_torch(monkeypatch, cuda)
    one_epoch(tmp_path)
    assert cuda.synchronized == []


def test_auto_never_imports_torch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, three_gpus: list[SimulatedGPU]
) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    tracker = one_epoch(tmp_path)
    assert "torch" not in sys.modules
    assert tracker.summary.gpu_energy_j is not None


def test_false_never_synchronises_and_true_does_before_cuda_is_initialised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, three_gpus: list[SimulatedGPU]
) -> None:
    cuda = StandInCuda(initialized=True)
    stand_in_torch(monkeypatch, cuda)
    one_epoch(tmp_path / "off", sync=False)
    assert cuda.synchronized == []
    cuda.initialized = False
    one_epoch(tmp_path / "on", sync=True, gpus=[2])
    assert cuda.synchronized == [2, 2]


def test_true_without_torch_warns_once_and_measures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, three_gpus: list[SimulatedGPU]
) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    tracker = one_epoch(tmp_path, sync=True)
    warnings = [w for w in tracker.summary.warnings if "sync=True" in w]
    assert len(warnings) == 1 and "torch is not imported" in warnings[0]
    assert tracker.epochs[0].gpu_energy_j is not None


def test_a_failing_synchronise_never_reaches_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, three_gpus: list[SimulatedGPU]
) -> None:
    stand_in_torch(monkeypatch, StandInCuda(True, RuntimeError("CUDA error: device-side assert")))
    tracker = one_epoch(tmp_path)
    assert tracker.epochs[0].gpu_energy_j is not None
    assert any("device-side assert" in w for w in tracker.summary.warnings)


def test_no_gpu_tracked_means_nothing_synchronised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, three_gpus: list[SimulatedGPU]
) -> None:
    cuda = StandInCuda(initialized=True)
    stand_in_torch(monkeypatch, cuda)
    tracker = Tracker("cpu", str(tmp_path), components=["cpu"], intensity=300.0, verbose=0)
    with tracker:
        tracker.epoch_start()
        tracker.epoch_end()
    assert cuda.synchronized == []


@pytest.mark.parametrize("bad", ["yes", 1, 0, None, "AUTO"])
def test_bad_sync_is_a_value_error_naming_it(tmp_path: Path, bad: object) -> None:
    with pytest.raises(ValueError, match="sync must be 'auto'"):
        Tracker("bad", str(tmp_path), sync=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="sync must be 'auto'"):
        TrackerHooks("any framework", None, {"log_dir": str(tmp_path), "sync": bad})
