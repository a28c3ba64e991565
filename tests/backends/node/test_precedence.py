"""``backends.discover``'s precedence with whole-node meters: the most direct meter per device."""

from __future__ import annotations

from pathlib import Path

import pytest

from backends.base import Found
from backends.discover import discover
from tests.fake_node import FakePmCounters, build_grace
from tests.fake_nvml import SimulatedGPU, install_fake_nvml, install_no_nvml
from tests.fake_powercap import build_powercap

CRAY = {"energy": 10**6, "cpu_energy": 10**5, "accel0_energy": 10**4, "accel1_energy": 10**4}


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WATTPRINT_SYSFS_ROOT", str(tmp_path / "sys"))
    return tmp_path / "sys"


def methods(found: Found) -> dict[str, str]:
    try:
        return {m.info.device: m.info.method for m in found.meters}
    finally:
        for meter in found.meters:
            meter.close()


def test_rapl_beats_the_node_share_and_the_share_beats_the_estimate(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_no_nvml(monkeypatch)
    FakePmCounters(root, CRAY)
    assert methods(discover(("cpu", "dram"))) == {"cpu": "node-share", "dram": "estimate"}
    build_powercap(tmp_path / "powercap", sockets=1)
    monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(tmp_path / "powercap"))
    assert methods(discover(("cpu", "dram"))) == {"cpu0": "rapl", "dram0": "rapl"}


def test_without_nvml_every_accelerator_file_is_a_gpu(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_no_nvml(monkeypatch)
    FakePmCounters(root, CRAY)
    found = discover(("gpu",))
    assert not found.missing
    assert methods(found) == {"gpu0": "node-share", "gpu1": "node-share"}


def test_accelerator_files_are_not_matched_to_gpus_cuda_renumbered(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_no_nvml(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    FakePmCounters(root, CRAY)
    found = discover(("gpu",))
    assert methods(found) == {} and [m.device for m in found.missing] == ["gpu"]


def test_a_mig_slice_never_gets_the_whole_boards_accelerator_file(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fake_nvml(monkeypatch, [SimulatedGPU(mig=True), SimulatedGPU()])
    FakePmCounters(root, CRAY)
    found = discover(("gpu",))
    assert methods(found) == {"gpu1": "counter"}
    assert [m.device for m in found.missing] == ["gpu0"]


def test_other_is_only_there_when_asked_for_and_the_node_meter_is_closed_otherwise(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_no_nvml(monkeypatch)
    FakePmCounters(root, CRAY)
    assert "node" in methods(discover(("other",)))
    assert "node" not in methods(discover(("gpu", "cpu", "dram")))


def test_gh200_without_nvml_takes_the_module_meter_less_its_grace_socket(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_no_nvml(monkeypatch)
    build_grace(root, sockets=2)
    found = discover()
    meters = {m.info.device: m.info for m in found.meters}
    assert {d: i.method for d, i in meters.items()} == {
        "gpu0": "power", "gpu1": "power", "cpu0": "power", "cpu1": "power"
    }  # fmt: skip
    assert meters["gpu1"].minus == ("cpu1",) and meters["gpu1"].model.startswith("NVIDIA GH200")
    assert [m.component for m in found.missing] == ["dram"]  # inside the Grace socket's figure
    methods(found)


def test_gh200_module_holds_the_cpu_when_the_grace_socket_is_not_tracked(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_no_nvml(monkeypatch)
    build_grace(root)
    found = discover(("gpu", "other"))
    meters = {m.info.device: m.info for m in found.meters}
    assert set(meters) == {"gpu0"} and meters["gpu0"].minus == ()  # nothing to take out
    methods(found)


@pytest.mark.parametrize(
    ("gpus", "visible", "kept"), [(None, None, True), ([1], None, False), (None, "0", False)]
)
def test_other_is_left_out_with_a_reason_where_the_run_leaves_out_gpus_of_the_node(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    gpus: list[int] | None,
    visible: str | None,
    kept: bool,
) -> None:
    """The rest of a node less gpu1 alone would hold gpu0, which its own job counts too."""
    install_fake_nvml(monkeypatch, [SimulatedGPU(), SimulatedGPU()])
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    FakePmCounters(root, CRAY)
    found = discover(("gpu", "cpu", "other"), gpus=gpus)
    gaps = [m for m in found.missing if m.component == "other"]
    assert ("node" in methods(found)) is kept
    if not kept:
        (gap,) = gaps
        assert "measures 1 of the node's 2 accelerators" in gap.reason
        assert "every GPU" in gap.fix


def test_without_nvml_gpus_picks_among_the_accelerator_files_and_refuses_what_names_none(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_no_nvml(monkeypatch)
    FakePmCounters(root, CRAY)
    assert methods(discover(("gpu",), gpus=[1])) == {"gpu1": "node-share"}
    for wrong in ([7], ["GPU-abc"]):
        with pytest.raises(ValueError, match=r"^gpus: .* names none of this node's accelerators"):
            discover(("gpu",), gpus=wrong)
