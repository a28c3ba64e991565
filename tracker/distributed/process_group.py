"""Training across processes: which meters each rank reads, and the job's totals on rank 0.

When the training script has initialised a ``torch.distributed`` process group (wattprint looks
only if ``torch`` is already imported; it never imports it to find out), each rank measures the
GPU it trains on, and exactly one rank per host (its local rank 0 as a rule; recorded in run.json)
measures the host's CPU packages, DRAM and estimates, so nothing is counted twice. Every
rank writes its own run directory ``<log_dir>/<project>/<run_id>/rank-<N>/`` (``run_id`` is rank
0's); rank 0 also writes the job's ``epochs.csv``, ``devices.csv`` and ``run.json`` in
``<log_dir>/<project>/<run_id>/``, each epoch the sum of every rank's
(``tracker.distributed.job``).

The ranks coordinate through the process group's key-value store (the TCPStore that
``init_process_group`` or ``torchrun`` set up), never through collectives: a rank posts its figures
for an epoch from a background thread and carries on; rank 0's background thread polls for the
other ranks' figures and writes the job's row once all are in. No rank waits for another in
lock-step, so ranks reaching ``epoch_end`` at different times, running different numbers of epochs
or dying cannot deadlock anything, and the training backend (gloo, nccl) does not matter. The only
waits are bounded: at start a rank waits for rank 0 to post the run id (env
``WATTPRINT_JOIN_TIMEOUT_S``, default 120 s), and rank 0's ``stop`` waits for the other ranks' last
epochs (env ``WATTPRINT_FINISH_TIMEOUT_S``, default 120 s; no wait when the run ended by an
exception or a signal); past either, rank 0 writes what it has, marks those epochs ``partial`` and
names the missing ranks in run.json.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from backends.base import EVERY_OTHER_DEVICE, Component, Meter, Missing
from tracker.carbon.intensity import Provenance
from tracker.distributed.job import RankEpoch
from tracker.distributed.store import Channel, Collector, DocumentFn, Sender
from tracker.notices import Notices
from tracker.output.logs import LogWriter
from tracker.records import EpochRecord

HOST_LEVEL_COMPONENTS: tuple[Component, ...] = ("cpu", "dram", "other")
SPLIT_NODE = (
    "the node's GPUs are read by several processes of this job, so the rest of the node "
    "cannot be told apart in one of them"
)
SPLIT_NODE_FIX = "measure the node from one process that reads all its GPUs (distributed=False)"

_CLAIM_WAIT_S = 10.0
_joined: dict[str, int] = {}  # trackers joined per project in this process: the key namespace


def validated_mode(distributed: object) -> bool | None:
    """``"auto"`` -> None (join a process group if there is one); True/False as given."""
    if distributed == "auto":
        return None
    if isinstance(distributed, bool):
        return distributed
    raise ValueError(f"distributed must be 'auto', True or False, got {distributed!r}")


def host_name() -> str:
    """This machine's name as the logs record it: env ``WATTPRINT_HOSTNAME``, else the hostname."""
    return os.environ.get("WATTPRINT_HOSTNAME") or socket.gethostname()


def process_rank() -> int:
    """This process's rank in its job: env ``RANK`` (torchrun), else ``SLURM_PROCID``, else 0."""
    return _int_env("RANK", "SLURM_PROCID")


def local_rank() -> int:
    """This process's rank on its host: ``LOCAL_RANK``, else ``SLURM_LOCALID``, else 0."""
    return _int_env("LOCAL_RANK", "SLURM_LOCALID")


def slurm_info() -> dict[str, str] | None:
    """The SLURM job, step, task and node of this process, or None outside SLURM."""
    names = {
        "job_id": "SLURM_JOB_ID",
        "step_id": "SLURM_STEP_ID",
        "proc_id": "SLURM_PROCID",
        "node_id": "SLURM_NODEID",
        "local_id": "SLURM_LOCALID",
        "nodelist": "SLURM_JOB_NODELIST",
    }
    found = {key: os.environ[name] for key, name in names.items() if os.environ.get(name)}
    return found or None


class JobLink:
    """This process's part in a distributed job: its role, its meters, its figures to rank 0."""

    def __init__(
        self, channel: Channel, rank: int, world_size: int, run_id: str, host_rank: int
    ) -> None:
        self.rank = rank
        self.world_size = world_size
        self.host = host_name()
        self.local_rank = local_rank()
        self.run_id = run_id
        self.host_rank = host_rank
        self.measures_host = host_rank == rank
        self.job_dir = Path()
        self.run_dir = Path()
        self._channel = channel
        self._worker: Collector | Sender | None = None
        self._epochs = 0

    @classmethod
    def join(cls, mode: bool | None, project: str, run_id: str, notices: Notices) -> JobLink | None:
        """Join the job of the initialised process group, or None to measure this process alone."""
        if mode is False:
            return None
        try:
            group = _process_group()
        except Exception as error:  # an odd torch build: measure alone rather than fail
            notices.warn("distributed:probe", f"could not inspect torch.distributed: {error!r}")
            return None
        if group is None:
            if mode is True:
                notices.warn(
                    "distributed:none",
                    "distributed=True but no torch.distributed process group is initialised "
                    "(start the Tracker after init_process_group); measuring this process alone",
                )
            return None
        store, rank, world_size = group
        number = _joined[project] = _joined.get(project, -1) + 1
        restart = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        channel = Channel(store, f"wattprint/{restart}/{project}/{number}")
        timeout_s = _seconds_env("WATTPRINT_JOIN_TIMEOUT_S", 120.0)
        try:
            if rank == 0:
                channel.post("run_id", run_id)
            host_rank = _claim_host(channel, rank, min(timeout_s, _CLAIM_WAIT_S))
            job_run_id = run_id if rank == 0 else channel.await_read("run_id", timeout_s)
        except Exception as error:  # the store is gone: nothing to coordinate through
            notices.warn("distributed:join", f"could not join the job's store: {error!r}")
            return None
        if not isinstance(job_run_id, str):
            notices.warn(
                "distributed:join",
                f"rank {rank}: rank 0 did not start a wattprint Tracker within {timeout_s:g} s; "
                "measuring this process alone (combine the runs with `wattprint merge`)",
            )
            return None
        return cls(channel, rank, world_size, job_run_id, host_rank)

    def place(self, run_dir: Path) -> Path:
        """This rank's own directory, from the tracker's ``<log_dir>/<project>/<run_id>``."""
        self.job_dir = run_dir.parent / self.run_id
        own = self.job_dir / f"rank-{self.rank}"
        self.run_dir = self.job_dir if self.rank == 0 else own
        return own

    @property
    def rank_dir(self) -> Path:
        """Where this rank's own logs go."""
        return self.job_dir / f"rank-{self.rank}"

    def components(self, requested: Sequence[Component]) -> tuple[Component, ...]:
        """The components this rank measures: host-level ones only on the host's measuring rank."""
        if self.measures_host:
            return tuple(requested)
        return tuple(c for c in requested if c not in HOST_LEVEL_COMPONENTS)

    def select(
        self, meters: Sequence[Meter], missing: Sequence[Missing], gpus_given: bool
    ) -> tuple[list[Meter], list[Missing]]:
        """Keep this rank's GPU (unless ``gpus`` chose) and the host's meters on its measuring rank.

        Meters left out are closed; what is missing for host-level components is another rank's
        to report. A host meter inside a GPU's figure (a GH200's Grace socket) goes with that
        GPU's rank, so the module's rest is taken from it; a whole-node meter stays only where
        this rank also reads every GPU of the host (else its rest would hold other ranks' GPUs).
        """
        kept_missing = [m for m in missing if self.measures_host or m.component == "gpu"]
        gpus = [m for m in meters if m.info.component == "gpu" and not m.info.host_level]
        chosen = gpus if gpus_given else self._own_gpus(gpus, kept_missing)
        inside_gpus = {name for m in gpus for name in m.info.minus}
        inside_own = {name for m in chosen for name in m.info.minus}
        kept: list[Meter] = []
        for meter in meters:
            wanted = meter in chosen if meter in gpus else self.measures_host
            if meter.info.device in inside_gpus:
                wanted = meter.info.device in inside_own
            elif EVERY_OTHER_DEVICE in meter.info.minus and wanted and len(chosen) < len(gpus):
                wanted = False
                kept_missing.append(Missing("other", meter.info.device, SPLIT_NODE, SPLIT_NODE_FIX))
            if wanted or not (meter in gpus or meter.info.host_level):
                kept.append(meter)
            else:
                with contextlib.suppress(Exception):
                    meter.close()
        return kept, kept_missing

    def open(
        self,
        meters: Sequence[Meter],
        missing: Sequence[Missing],
        components: Sequence[Component],
        provenance: Provenance,
        document: DocumentFn,
        notices: Notices,
        verbose: int,
    ) -> None:
        """Say what this rank measures and start its background thread (rank 0: the collector)."""
        info = {
            **self.describe(),
            "measured": bool(meters),
            "hardware": [dataclasses.asdict(m.info) | {"fast": m.fast} for m in meters],
            "missing": [dataclasses.asdict(m) for m in missing],
        }
        if self.rank != 0:
            self._worker = Sender(self._channel, notices)
            self._worker.post(f"info/{self.rank}", info)
            return
        try:
            writer = LogWriter(self.job_dir, notices)
        except OSError as error:
            notices.warn(
                "distributed:dir", f"cannot write the job's logs in {self.job_dir}: {error}"
            )
            return
        self._worker = Collector(
            self._channel,
            (self.run_id, self.world_size, self.job_dir),
            writer,
            info,
            tuple(components),
            provenance,
            document,
            notices,
            verbose,
        )

    def submit(self, record: EpochRecord) -> None:
        """Hand this rank's epoch to rank 0 (never blocks: a background thread sends it)."""
        self._epochs = record.epoch
        part = RankEpoch.from_record(record, self.rank, self.host)
        if isinstance(self._worker, Collector):
            self._worker.add_own(part)
        elif isinstance(self._worker, Sender):
            self._worker.post(
                f"epoch/{part.epoch}/{self.rank}", part.to_json(), f"epoch/{part.epoch}/n"
            )

    def finish(self, wait: bool = True) -> None:
        """Send the last figures; rank 0 waits (bounded) for the others' and writes the last rows.

        ``wait=False`` (a run ended by an exception or a signal): rank 0 writes what it has now.
        """
        timeout_s = _seconds_env("WATTPRINT_FINISH_TIMEOUT_S", 120.0) if wait else 0.0
        if isinstance(self._worker, Sender):
            self._worker.post(f"done/{self.rank}", {"epochs": self._epochs}, "done/n")
            self._worker.close(max(timeout_s, 5.0))
        elif isinstance(self._worker, Collector):
            self._worker.finish(self._epochs, timeout_s)

    def describe(self) -> dict[str, Any]:
        """This rank's place in the job, as run.json's ``distributed`` section records it."""
        return {
            "role": "rank",
            "rank": self.rank,
            "world_size": self.world_size,
            "host": self.host,
            "local_rank": self.local_rank,
            "measures_host": self.measures_host,
            "host_rank": self.host_rank,
            "job_dir": str(self.job_dir),
            "run_dir": str(self.rank_dir),
        }

    def _own_gpus(self, gpus: list[Meter], missing: list[Missing]) -> list[Meter]:
        index = _current_gpu(self.local_rank)
        named = [m for m in gpus if m.info.device == f"gpu{index}"]
        if named or len(gpus) <= 1:
            return named or gpus
        missing.append(
            Missing(
                "gpu",
                "gpu",
                f"rank {self.rank} sees {len(gpus)} GPUs and none is gpu{index} (its local rank)",
                "pass gpus=[index] to the Tracker, or call torch.cuda.set_device() first",
            )
        )
        return []


def _process_group() -> tuple[Any, int, int] | None:
    """The default group's store, this rank and the world size, if torch has a group up."""
    torch = sys.modules.get("torch")
    dist = getattr(torch, "distributed", None) if torch is not None else None
    if dist is None or not dist.is_available() or not dist.is_initialized():
        return None
    store = dist.distributed_c10d._get_default_store()
    return store, int(dist.get_rank()), int(dist.get_world_size())


def _claim_host(channel: Channel, rank: int, wait_s: float) -> int:
    """The rank that measures this host's meters: local rank 0 as a rule, exactly one in any case.

    Local rank 0 claims the host at once; another rank first gives it ``wait_s`` to do so, and
    claims the host itself only if no rank has (a host without local rank 0, or a late one).
    """
    key = f"host/{host_name()}"
    if local_rank() != 0:
        channel.await_read(key, wait_s)
    return int(channel.claim(key, str(rank)))


def _current_gpu(local: int) -> int:
    """The CUDA device this process uses: torch's current one if CUDA is up, else the local rank."""
    torch = sys.modules.get("torch")
    try:
        if torch is not None and torch.cuda.is_initialized():
            return int(torch.cuda.current_device())
    except Exception:  # no usable CUDA: fall back to the launcher's numbering
        pass
    return local


def _int_env(*names: str) -> int:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 0


def _seconds_env(name: str, default: float) -> float:
    try:
        value = float(os.environ.get(name, default))
    except ValueError:
        return default
    return value if value > 0 and math.isfinite(value) else default
