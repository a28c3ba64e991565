"""``wattprint merge``: runs of one SLURM job, one per process, with no process group between them.

Four trackers stand for four processes (two per host, every one measuring its host's powercap tree,
as separate processes do); their epochs overlap, so each host's CPU and DRAM joules appear in two
runs. Merged, they must appear once.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.fake_nvml import SimulatedGPU, constant_power, install_fake_nvml
from tests.fake_powercap import FakeZone, build_powercap
from tracker import Tracker, load_run
from tracker.cli.main import main as wattprint
from tracker.distributed.merge import merge_runs

# rank -> (host, GPU index on the simulated NVML, gCO2e/kWh of the host's grid)
PROCESSES = {
    0: ("alpha", 0, 300.0),
    1: ("alpha", 1, 300.0),
    2: ("beta", 2, 100.0),
    3: ("beta", 3, 100.0),
}
DRIVE_J = {"alpha": {"cpu0": 30.0, "dram0": 4.0}, "beta": {"cpu0": 50.0, "dram0": 6.0}}


def run_slurm_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, job_ids: dict[int, str] | None = None
) -> tuple[list[Tracker], list[dict[str, float]]]:
    """Two epochs of four overlapping 'processes'; return their trackers and each epoch's truth."""
    gpus = [SimulatedGPU(power_w=constant_power(100.0 + 50 * i)) for i in range(4)]
    install_fake_nvml(monkeypatch, gpus)
    zones: dict[str, dict[str, FakeZone]] = {}
    trackers: list[Tracker] = []
    for rank, (host, gpu, intensity) in PROCESSES.items():
        root = tmp_path / f"powercap-{host}"
        if host not in zones:
            zones[host] = build_powercap(root, sockets=1)
        monkeypatch.setenv("WATTPRINT_HOSTNAME", host)
        monkeypatch.setenv("WATTPRINT_POWERCAP_ROOT", str(root))
        monkeypatch.setenv("SLURM_JOB_ID", (job_ids or {}).get(rank, "4242"))
        monkeypatch.setenv("SLURM_PROCID", str(rank))
        monkeypatch.setenv("SLURM_NODEID", str(rank // 2))
        tracker = Tracker("slurm", tmp_path / "runs", gpus=[gpu], intensity=intensity, verbose=0)
        trackers.append(tracker.start())
    truths = []
    for _ in range(2):
        for tracker in trackers:
            tracker.epoch_start()
        for host, drive in DRIVE_J.items():
            for name, joules in drive.items():
                zones[host][name].add_energy_j(joules)  # inside both of the host's epochs
        time.sleep(0.2)
        records = [tracker.epoch_end() for tracker in trackers]
        gpu_j = [
            gpus[PROCESSES[r][1]].energy_j(rec.start_s, rec.end_s) for r, rec in enumerate(records)
        ]
        host_j = {host: sum(drive.values()) for host, drive in DRIVE_J.items()}
        truths.append(
            {
                "gpu": sum(gpu_j),
                "cpu": sum(d["cpu0"] for d in DRIVE_J.values()),
                "dram": sum(d["dram0"] for d in DRIVE_J.values()),
                "co2_g": (
                    sum(j * PROCESSES[r][2] for r, j in enumerate(gpu_j))
                    + host_j["alpha"] * 300.0
                    + host_j["beta"] * 100.0
                )
                / 3.6e6,
            }
        )
    for tracker in trackers:
        tracker.stop()
    return trackers, truths


def test_merge_counts_each_hosts_cpu_and_dram_once_and_prices_each_run_at_its_own_grid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trackers, truths = run_slurm_job(tmp_path, monkeypatch)
    each = [load_run(t.run_dir) for t in trackers]
    assert all(run["cpu_energy_j"].iloc[0] > 0 for run in each)  # every process read its host
    code = wattprint(["merge", *(str(t.run_dir) for t in trackers), "--out", str(tmp_path / "m")])
    assert code == 0 and "2 epochs" in capsys.readouterr().out
    merged = load_run(tmp_path / "m")
    assert list(merged["epoch"]) == [1, 2]
    for truth, (_, row) in zip(truths, merged.iterrows(), strict=True):
        assert row["cpu_energy_j"] == pytest.approx(truth["cpu"], rel=1e-6)
        assert row["dram_energy_j"] == pytest.approx(truth["dram"], rel=1e-6)
        assert row["gpu_energy_j"] == pytest.approx(truth["gpu"], rel=1e-3)
        assert row["co2_g"] == pytest.approx(truth["co2_g"], rel=1e-3)
        assert row["methods"] == "gpu=counter;cpu=rapl;dram=rapl" and not row["partial"]
    devices = load_run(tmp_path / "m", devices=True)
    host_rows = devices[devices["kind"] != "gpu"]
    assert sorted(set(zip(host_rows["host"], host_rows["rank"], strict=True))) == [
        ("alpha", 0),
        ("beta", 2),
    ]
    run = json.loads((tmp_path / "m" / "run.json").read_text())
    assert run["run_id"] == "slurm-4242" and run["slurm"]["job_id"] == "4242"
    assert run["totals"]["co2_g"] == pytest.approx(merged["co2_g"].sum())
    dropped = {(d["host"], d["rank"], d["device"]) for d in run["merged"]["host_level_dropped"]}
    assert dropped == {("alpha", 1, "cpu0"), ("alpha", 1, "dram0"), ("beta", 3, "cpu0")} | {
        ("beta", 3, "dram0")
    }
    assert json.loads((trackers[3].run_dir / "run.json").read_text())["rank"] == 3


def test_runs_of_different_jobs_need_same_job_to_merge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trackers, _ = run_slurm_job(tmp_path, monkeypatch, job_ids={2: "7", 3: "7"})
    dirs = [str(t.run_dir) for t in trackers]
    assert wattprint(["merge", *dirs, "--out", str(tmp_path / "m")]) == 2
    assert "--same-job" in capsys.readouterr().err
    summary = merge_runs(dirs, tmp_path / "m", same_job=True)
    assert summary.epochs == 2 and summary.cpu_energy_j == pytest.approx(2 * 80.0, rel=1e-6)
    with pytest.raises(ValueError, match="not empty"):
        merge_runs(dirs, tmp_path / "m", same_job=True)


def test_a_merged_run_or_a_run_given_twice_is_never_counted_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's `merge sweep/*/` run twice also matches the first merge's output."""
    trackers, _ = run_slurm_job(tmp_path, monkeypatch)
    runs = [str(t.run_dir) for t in trackers]
    merge_runs(runs, tmp_path / "m")
    with pytest.raises(ValueError, match="is already a merged run"):
        merge_runs([*runs, str(tmp_path / "m")], tmp_path / "m2")
    with pytest.raises(ValueError, match="the same run directory twice"):
        merge_runs([runs[0], runs[0] + "/"], tmp_path / "m3")
    assert not (tmp_path / "m2").exists() and not (tmp_path / "m3").exists()


def test_a_merge_that_cannot_be_written_fails_naming_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    trackers, _ = run_slurm_job(tmp_path, monkeypatch)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    code = wattprint(["merge", *(str(t.run_dir) for t in trackers), "--out", str(blocker / "m")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("wattprint: error: --out") and "Traceback" not in err
