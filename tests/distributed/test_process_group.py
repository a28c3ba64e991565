"""Training across processes: real gloo ranks on 127.0.0.1, simulated GPUs and powercap per host.

Each rank is a subprocess (tests/distributed/dist_worker.py) whose NVML shows its host's simulated
GPUs; two hosts are simulated by giving ranks different WATTPRINT_HOSTNAME values and one powercap
tree per host. The job's figures in rank 0's epochs.csv must equal the sum of the simulated
truths, with each host's CPU and DRAM counted once however many ranks share the host.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pytest

from backends.base import Found
from backends.discover import discover
from tests.fake_node import FakePmCounters, build_grace
from tests.fake_nvml import SimulatedGPU, install_fake_nvml
from tests.fake_powercap import build_powercap
from tracker import load_run
from tracker.cli.main import main as wattprint
from tracker.distributed.process_group import SPLIT_NODE_FIX, JobLink

REPO = Path(__file__).resolve().parents[2]
HOST_GPU_W = [200.0, 300.0]  # every host's GPUs; local rank i trains on GPU i
DRIVE_J = {"alpha": {"cpu0": 30.0, "dram0": 4.0}, "beta": {"cpu0": 50.0, "dram0": 6.0}}
INTENSITY = {"alpha": 300.0, "beta": 100.0}  # gCO2e/kWh: each host prices its own energy
EPOCHS = 2

# (host, local rank, has a GPU driver, seconds it dawdles before each epoch_end)
Layout = list[tuple[str, int, bool, float]]
TWO_HOSTS_ONE_RANK_EACH: Layout = [("alpha", 0, True, 0.0), ("beta", 0, True, 0.4)]
TWO_HOSTS_TWO_RANKS_EACH: Layout = [
    ("alpha", 0, True, 0.3),
    ("alpha", 1, True, 0.0),
    ("beta", 0, True, 0.5),
    ("beta", 1, False, 0.1),  # no NVIDIA driver, and not its host's measuring rank: no meters
]
LAYOUTS = {"2-ranks": TWO_HOSTS_ONE_RANK_EACH, "4-ranks": TWO_HOSTS_TWO_RANKS_EACH}
Job = Callable[[str], list[dict[str, Any]]]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    """Run a layout's job once per module (a few seconds each) and hand out its results."""
    done: dict[str, list[dict[str, Any]]] = {}

    def run(name: str) -> list[dict[str, Any]]:
        if name not in done:
            done[name] = launch(tmp_path_factory.mktemp(name), LAYOUTS[name])
        return done[name]

    return run


def launch(
    tmp_path: Path,
    layout: Layout,
    extra: dict[int, dict[str, Any]] | None = None,
    finish_timeout_s: float = 30.0,
) -> list[dict[str, Any]]:
    """Run one job with a rank per layout entry; return each rank's truth and run directory.

    ``extra`` adds worker settings per rank; a rank with ``crash_after`` must exit with 3.
    """
    port = _free_port()
    roots = {}
    for host in {h for h, *_ in layout}:
        roots[host] = tmp_path / f"powercap-{host}"
        build_powercap(roots[host], sockets=1)
    drivers = {host: max(i for i, entry in enumerate(layout) if entry[0] == host) for host in roots}
    children = []
    for rank, (host, local, has_gpus, dawdle_s) in enumerate(layout):
        zones = roots[host] / "intel-rapl" / "intel-rapl:0"
        paths = {"cpu0": zones, "dram0": zones / "intel-rapl:0:1"}
        drive = drivers[host] == rank
        config = {
            "gpu_w": HOST_GPU_W if has_gpus else [],
            "drive": {
                name: [str(path), 262_143_328_850, DRIVE_J[host][name]]
                for name, path in paths.items()
                if drive
            },
            "dawdle_s": dawdle_s,
            "epochs": EPOCHS,
            "intensity": INTENSITY[host],
            "log_dir": str(tmp_path / "runs"),
            "out": str(tmp_path / f"truth-{rank}.json"),
        } | (extra or {}).get(rank, {})
        env = os.environ | {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "GLOO_SOCKET_IFNAME": "lo",
            "WORLD_SIZE": str(len(layout)),
            "RANK": str(rank),
            "LOCAL_RANK": str(local),
            "WATTPRINT_HOSTNAME": host,
            "WATTPRINT_POWERCAP_ROOT": str(roots[host]),
            "WATTPRINT_FINISH_TIMEOUT_S": str(finish_timeout_s),
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        }
        log = open(tmp_path / f"rank-{rank}.log", "w")  # noqa: SIM115 - closed below
        command = [sys.executable, "-m", "tests.distributed.dist_worker", json.dumps(config)]
        children.append((subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=log), log))
    for rank, (child, log) in enumerate(children):
        try:
            code = child.wait(timeout=90)
        finally:
            log.close()
        output = (tmp_path / f"rank-{rank}.log").read_text()
        crashes = "crash_after" in (extra or {}).get(rank, {})
        assert code == (3 if crashes else 0), f"rank {rank} exited {code}:\n{output}"
    outputs = [tmp_path / f"truth-{r}.json" for r in range(len(layout))]
    return [json.loads(out.read_text()) if out.exists() else {} for out in outputs]


def expected(layout: Layout, results: list[dict[str, Any]], epoch: int) -> dict[str, float]:
    """The truth of one epoch (1-based): GPU joules of every rank, host joules once per host."""
    truths = [r["truth"][epoch - 1] for r in results]
    gpu_j = sum(t["gpu_j"] for t in truths)
    cpu_j = sum(t.get("cpu0", 0.0) for t in truths)
    dram_j = sum(t.get("dram0", 0.0) for t in truths)
    co2_g = 0.0
    for (host, *_), truth in zip(layout, truths, strict=True):
        co2_g += truth["gpu_j"] * INTENSITY[host] / 3.6e6
    for host, drive in DRIVE_J.items():
        if any(h == host for h, *_ in layout):
            co2_g += sum(drive.values()) * INTENSITY[host] / 3.6e6
    return {"gpu": gpu_j, "cpu": cpu_j, "dram": dram_j, "co2_g": co2_g}


@pytest.mark.parametrize("name", LAYOUTS)
def test_job_total_on_rank_0_is_the_sum_of_every_rank_with_host_meters_counted_once(
    job: Job, name: str
) -> None:
    layout, results = LAYOUTS[name], job(name)
    job_dir = Path(results[0]["run_dir"])
    epochs = load_run(job_dir)
    assert list(epochs["epoch"]) == list(range(1, EPOCHS + 1))
    assert not epochs["partial"].any()
    for epoch, row in epochs.set_index("epoch").iterrows():
        truth = expected(layout, results, int(str(epoch)))
        assert row["gpu_energy_j"] == pytest.approx(truth["gpu"], rel=1e-3)
        assert row["cpu_energy_j"] == pytest.approx(truth["cpu"], rel=1e-6)
        assert row["dram_energy_j"] == pytest.approx(truth["dram"], rel=1e-6)
        assert row["it_energy_j"] == pytest.approx(
            truth["gpu"] + truth["cpu"] + truth["dram"], 1e-3
        )
        assert row["co2_g"] == pytest.approx(truth["co2_g"], rel=1e-3)

    devices = load_run(job_dir, devices=True)
    host_rows = devices[devices["kind"] != "gpu"]
    measuring = {e[0]: rank for rank, e in enumerate(layout) if e[1] == 0}  # local rank 0
    for (host, rank), rows in host_rows.groupby(["host", "rank"]):
        assert measuring[str(host)] == rank
        assert sorted(rows["device"]) == sorted(["cpu0", "dram0"] * EPOCHS)
    gpu_rows = devices[devices["kind"] == "gpu"]
    with_driver = [rank for rank, entry in enumerate(layout) if entry[2]]
    assert sorted(set(gpu_rows["rank"])) == with_driver
    for rank, rows in gpu_rows.groupby("rank"):
        assert set(rows["device"]) == {f"gpu{layout[int(str(rank))][1]}"}  # its own GPU only

    run = json.loads((job_dir / "run.json").read_text())
    assert run["distributed"]["role"] == "job" and run["distributed"]["world_size"] == len(layout)
    assert run["totals"]["it_energy_j"] == pytest.approx(epochs["it_energy_j"].sum())
    assert run["status"] == "finished"
    measured = {r["rank"]: r["measured"] for r in run["distributed"]["ranks"]}
    assert measured == {rank: entry[2] or entry[1] == 0 for rank, entry in enumerate(layout)}
    for rank, result in enumerate(results[1:], start=1):
        assert Path(result["run_dir"]) == job_dir / f"rank-{rank}"
    for rank in range(len(layout)):
        own = load_run(job_dir / f"rank-{rank}")
        assert len(own) == EPOCHS and (own["run_id"] == run["run_id"]).all()


def test_merge_of_the_rank_directories_gives_the_process_group_totals(
    job: Job, tmp_path: Path
) -> None:
    results = job("4-ranks")
    job_dir = Path(results[0]["run_dir"])
    ranks = [str(job_dir / f"rank-{rank}") for rank in range(len(TWO_HOSTS_TWO_RANKS_EACH))]
    assert wattprint(["merge", *ranks, "--out", str(tmp_path / "merged")]) == 0
    merged, whole = load_run(tmp_path / "merged"), load_run(job_dir)
    columns = [
        "gpu_energy_j",
        "cpu_energy_j",
        "dram_energy_j",
        "it_energy_j",
        "facility_energy_kwh",
        "co2_g",
    ]
    pd.testing.assert_frame_equal(merged[columns], whole[columns], rtol=1e-9)


def test_a_rank_that_dies_costs_its_figures_not_the_job(tmp_path: Path) -> None:
    solo = {"barrier": False, "drive": {}}
    results = launch(
        tmp_path,
        [("alpha", 0, True, 0.2), ("beta", 0, True, 0.0)],
        {0: solo | {"epochs": 3}, 1: solo | {"crash_after": 1}},
        finish_timeout_s=2.0,
    )
    job_dir = Path(results[0]["run_dir"])
    epochs = load_run(job_dir)
    assert list(epochs["epoch"]) == [1, 2, 3]  # rank 0's epochs are all written...
    assert list(epochs["partial"]) == [False, True, True]  # ...the ones rank 1 missed as partial
    assert epochs["gpu_energy_j"].iloc[1] == pytest.approx(results[0]["truth"][1]["gpu_j"], 1e-3)
    run = json.loads((job_dir / "run.json").read_text())
    assert run["distributed"]["incomplete_epochs"] == {"2": [1], "3": [1]}
    assert max(results[0]["epoch_end_s"]) < 0.05  # the training loop never waited on rank 1
    assert results[0]["stop_s"] < 2.0 + 1.0  # stop waited for rank 1 no longer than the timeout


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# -- whole-node meters in a job: the node's rest is told apart only where it can be ---------------


def whole_node_meters(
    root: Path, monkeypatch: pytest.MonkeyPatch, gpu_name: str = "NVIDIA H100 80GB HBM3"
) -> Found:
    """Two GPUs and a Cray node meter (or GH200 modules and Grace sockets) on one host."""
    monkeypatch.setenv("WATTPRINT_SYSFS_ROOT", str(root))
    install_fake_nvml(monkeypatch, [SimulatedGPU(name=gpu_name), SimulatedGPU(name=gpu_name)])
    return discover(("gpu", "cpu", "other"))


@pytest.mark.parametrize("local", [0, 1])
def test_a_rank_reading_one_of_the_hosts_gpus_leaves_the_node_meter_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local: int
) -> None:
    FakePmCounters(tmp_path / "sys", {"energy": 10**6})
    found = whole_node_meters(tmp_path / "sys", monkeypatch)
    monkeypatch.setenv("LOCAL_RANK", str(local))
    link = JobLink(cast(Any, None), rank=local, world_size=2, run_id="r", host_rank=0)
    kept, missing = link.select(found.meters, found.missing, gpus_given=False)
    assert [m.info.device for m in kept] == [f"gpu{local}"] + (["cpu"] if local == 0 else [])
    gaps = [m for m in missing if m.component == "other"]
    assert [(m.device, m.fix) for m in gaps] == ([("node", SPLIT_NODE_FIX)] if local == 0 else [])
    for meter in kept:
        meter.close()


def test_a_rank_reading_every_gpu_of_the_host_keeps_the_node_meter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FakePmCounters(tmp_path / "sys", {"energy": 10**6})
    found = whole_node_meters(tmp_path / "sys", monkeypatch)
    link = JobLink(cast(Any, None), rank=0, world_size=1, run_id="r", host_rank=0)
    kept, missing = link.select(found.meters, found.missing, gpus_given=True)
    assert {m.info.device for m in kept} == {"gpu0", "gpu1", "cpu", "node"}
    assert not [m for m in missing if m.component == "other"]
    for meter in kept:
        meter.close()


def test_a_gh200_ranks_grace_socket_goes_with_its_gpu_so_its_module_rest_is_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_grace(tmp_path / "sys", sockets=2)
    found = whole_node_meters(tmp_path / "sys", monkeypatch, "NVIDIA GH200 480GB")
    kept_by_rank = []
    for rank in (0, 1):
        monkeypatch.setenv("LOCAL_RANK", str(rank))
        link = JobLink(cast(Any, None), rank=rank, world_size=2, run_id="r", host_rank=0)
        kept, _ = link.select(found.meters, found.missing, gpus_given=False)
        kept_by_rank.append({m.info.device: m.info.minus for m in kept})
    assert kept_by_rank == [{"gpu0": ("cpu0",), "cpu0": ()}, {"gpu1": ("cpu1",), "cpu1": ()}]
    for meter in found.meters:
        meter.close()
