"""The job's own share of meters that describe a whole host or a whole GPU, on shared machines.

RAPL, the CPU and DRAM estimates and a node meter measure every process on the host; a GPU
time-sliced between jobs, or split into MIG slices, measures them all too. ``SharedMeter`` wraps
such a meter and hands the sampler the job's share of it as an ordinary meter, keeping the host
figure beside it (``totals``) so both can be reported.

Formulas (each over the span between two share measurements, at most ``SHARE_SPAN_S`` apart while
the sampler runs, so the share follows the load over time):

* CPU: the busy-time share. job energy = host energy x (CPU seconds of this process tree) /
  (busy CPU seconds of the whole machine). The tree is this process and its children,
  recursively: DataLoader workers, the command ``wattprint run`` starts. Idle and uncore power
  are split in proportion to the busy time too, so the shares of every job on a host add up to
  the host's energy, and a job alone on a machine is charged all of it, as with ``host``.
* DRAM: the resident-memory share. job energy = host DRAM energy x (resident memory of the tree)
  / (the machine's used memory, total - available). DRAM power is mostly background and refresh
  power of the modules, which follows capacity held rather than work done; per-process memory
  traffic is not observable without hardware counters.
* GPU shared by processes: the GPU's energy x this tree's SM utilisation / every process's, from
  NVML's per-process utilisation samples (``attributed``).
* MIG slice: the parent GPU's energy x the slice's fixed share of the GPU's compute slices
  (``estimate``: the slice's real draw is not exposed by NVML).

Limits: resident memory counts shared pages in every process that maps them; the CPU time of a
process that leaves the tree unreaped (a daemon that detaches) is lost from then on; inside a
container NVML reports host PIDs, which match none of the tree's, so GPU attribution there gives
the job 0; a GPU whose other users start after the run began is not attributed; in a distributed
job the rank that reads a host's meters counts its own tree, not the other ranks on the host.
Shares are clamped to 0..1.
"""

from __future__ import annotations

import dataclasses
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil

from backends import sysfs
from backends.base import (
    EVERY_OTHER_DEVICE,
    MIN_RATE_SPAN_S,
    Found,
    Meter,
    MeterReadError,
    Missing,
    Reading,
    expected_energy_j,
    unwrapped_j,
)
from backends.cpu.estimate import busy_cpu_s

__all__ = [
    "ATTRIBUTIONS",
    "ENV",
    "SHARE_SPAN_S",
    "Attribution",
    "Decision",
    "FixedShare",
    "ProcessTree",
    "SharedMeter",
    "attribute",
    "decide",
]

Attribution = Literal["host", "process", "auto"]
ATTRIBUTIONS: tuple[Attribution, ...] = ("host", "process", "auto")
ENV = "WATTPRINT_ATTRIBUTION"

SHARE_SPAN_S = 0.25
"""The shortest span a share is measured over, in s. CPU time is counted in 10 ms ticks, so a
shorter span says little; reads closer together (an epoch edge just after a sampler read) apply
the latest share, and cost a lock instead of a walk of the process tree."""
TREE_REFRESH_S = 1.0
"""How often the process tree is listed again, in s (a listing reads every process's stat)."""
_FIRST_UID = 1000
"""The lowest user id of a person on Linux (``UID_MIN`` of login.defs); lower ones are system."""

_CPU_RANGE = re.compile(r"(\d+)(?:-(\d+))?")  # one entry of a kernel cpu list: 3 or 0-7

Share = Callable[[], float | None]
"""The job's share (0..1) of a device over the latest span; None where it cannot be said now."""


@dataclass(frozen=True, slots=True)
class Decision:
    """Which attribution a run uses (``host`` or ``process``), what was asked, and why."""

    mode: Literal["host", "process"]
    requested: Attribution
    reason: str


class ProcessTree:
    """This process and its descendants: their CPU time and resident memory, and the machine's.

    ``cpu_share`` gives the tree's CPU seconds over the machine's busy CPU seconds since the
    previous measurement, and ``memory_share`` its resident bytes over the machine's used bytes,
    both measured at most every ``SHARE_SPAN_S``. Thread-safe: one tree serves every meter.
    """

    def __init__(self, root_pid: int | None = None) -> None:
        self._root = psutil.Process(root_pid if root_pid is not None else os.getpid())
        self._lock = threading.Lock()
        self._members: dict[int, psutil.Process] = {}
        self._listed_s = -float("inf")
        self._last = (time.monotonic(), self._tree_cpu_s(), busy_cpu_s())
        self._cpu_share: float | None = None
        self._memory_share: float | None = None

    def pids(self) -> frozenset[int]:
        """The process ids of the tree, listed at most ``TREE_REFRESH_S`` ago."""
        with self._lock:
            self._list()
            return frozenset(self._members)

    def cpu_share(self) -> float | None:
        """The tree's share of the machine's busy CPU time over the latest span."""
        return self._measure()[0]

    def memory_share(self) -> float | None:
        """The tree's resident memory over the machine's used memory, at the latest span."""
        return self._measure()[1]

    def _measure(self) -> tuple[float | None, float | None]:
        with self._lock:
            now_s = time.monotonic()
            last_s, last_tree_s, last_busy_s = self._last
            if now_s - last_s < SHARE_SPAN_S and self._cpu_share is not None:
                return self._cpu_share, self._memory_share
            tree_s, busy_s = self._tree_cpu_s(), busy_cpu_s()
            if busy_s > last_busy_s:
                self._cpu_share = _clamped((tree_s - last_tree_s) / (busy_s - last_busy_s))
                self._last = (now_s, tree_s, busy_s)
            self._memory_share = self._resident_share()
            return self._cpu_share, self._memory_share

    def _list(self) -> None:
        """Refresh the member list, at most every ``TREE_REFRESH_S``."""
        now_s = time.monotonic()
        if now_s - self._listed_s < TREE_REFRESH_S:
            return
        try:
            children = self._root.children(recursive=True)
        except psutil.Error:
            children = []
        self._members = {p.pid: p for p in (self._root, *children)}
        self._listed_s = now_s

    def _tree_cpu_s(self) -> float:
        """CPU seconds of the tree: each member's own, and that of its children it has reaped.

        A member that exits and is reaped moves its whole time, to its last tick, into its
        parent's ``children_user``/``children_system``; so a DataLoader worker that lives
        between two listings is counted all the same, and nothing is counted twice.
        """
        self._list()
        total = 0.0
        for pid, process in list(self._members.items()):
            try:
                t = process.cpu_times()
            except psutil.Error:  # gone: its time is now its parent's children_*
                del self._members[pid]
                continue
            total += t.user + t.system + t.children_user + t.children_system
        return total

    def _resident_share(self) -> float | None:
        resident = 0
        for process in list(self._members.values()):
            try:
                resident += process.memory_info().rss
            except psutil.Error:
                continue
        try:
            memory = psutil.virtual_memory()
        except OSError:
            return None
        used = memory.total - memory.available
        return _clamped(resident / used) if used > 0 else None


class FixedShare:
    """A share that never changes (a MIG slice's part of its GPU)."""

    def __init__(self, share: float) -> None:
        self.share = _clamped(share)

    def __call__(self) -> float:
        """The fixed share."""
        return self.share


class SharedMeter(Meter):
    """The job's share of ``inner``'s device, as an ordinary meter of the same kind.

    A counter gives its own cumulative counter: each read-to-read difference of the host counter
    (unwrapped at ``inner.wrap_j``) times the share, summed. It wraps where ``inner`` does, so the
    sampler reads it as often as the host counter needs (a share never runs faster than the
    host). A power meter gives the host power times the latest share. ``label`` joins the method
    (``rapl@process``). ``totals`` gives the job's and the host's energy over the same reads, so
    their ratio is the run's share. Reads come from the sampler thread and the training thread at
    epoch edges: a lock keeps each one whole.
    """

    def __init__(self, inner: Meter, share: Share, label: str) -> None:
        self.inner = inner
        self.info = dataclasses.replace(inner.info, attribution=label)
        self.fast = inner.fast
        self.wrap_j = inner.wrap_j
        self.max_power_w = inner.max_power_w
        self._share_of = share
        self._lock = threading.Lock()
        first = share()  # until a share is measured: the whole device, never less than the job
        self._share = _clamped(first) if first is not None else 1.0
        self._last: Reading | None = None
        self._host_w: float | None = None  # the host's power over the previous interval
        self._host_j = 0.0
        self._job_j = 0.0
        self._restart_j = 0.0  # the job's energy when the host counter last reset

    def totals(self) -> tuple[float, float]:
        """The job's and the host's energy in J over the same reads since the first."""
        with self._lock:
            return self._job_j, self._host_j

    @property
    def share(self) -> float:
        """The share applied at the latest read (0..1)."""
        return self._share

    def read(self) -> Reading:
        """The job's share of the device now; raises the inner meter's ``MeterError``."""
        with self._lock:
            reading = self.inner.read()
            try:
                share = self._share_of()
            except (OSError, psutil.Error) as exc:
                why = f"{self.info.device}: cannot measure the job's share: {exc}"
                raise MeterReadError(why) from exc
            if share is not None:
                self._share = _clamped(share)
            return self._fold(reading)

    def _fold(self, reading: Reading) -> Reading:
        last, self._last = self._last, reading
        if reading.power_w is not None:
            if last is not None and last.power_w is not None and reading.t_s > last.t_s:
                host_j = (last.power_w + reading.power_w) / 2 * (reading.t_s - last.t_s)
                self._host_j += host_j
                self._job_j += host_j * self._share
            return Reading(reading.t_s, power_w=reading.power_w * self._share)
        if reading.energy_j is None:
            return reading
        if last is not None and last.energy_j is not None and reading.t_s > last.t_s:
            delta_j = reading.energy_j - last.energy_j
            if delta_j < 0 and not self.wrap_j:
                # A reset (GPU reset, driver reload): nothing is known of the gap, so the job's
                # counter restarts from 0 as the host's did, and the sampler bridges the gap from
                # the preceding power and warns, as for an unshared counter; never a silent 0 J.
                self._restart_j = self._job_j
            else:
                delta_j = self._host_delta_j(delta_j, reading.t_s - last.t_s)
                self._host_j += delta_j
                self._job_j += delta_j * self._share
        value_j = self._job_j - self._restart_j
        return Reading(reading.t_s, energy_j=value_j % self.wrap_j if self.wrap_j else value_j)

    def _host_delta_j(self, delta_j: float, dt: float) -> float:
        """The host counter's energy between two reads, unwrapped.

        Below zero, the counter wrapped (more than once where the previous interval's power says
        so: a starved sampler). The job's counter built on it is unwrapped by the sampler like
        any other.
        """
        if self.wrap_j:
            expected_j = expected_energy_j(self._host_w, dt, self.max_power_w)
            delta_j, _ = unwrapped_j(delta_j, self.wrap_j, expected_j)
        if dt >= MIN_RATE_SPAN_S:
            self._host_w = delta_j / dt
        return delta_j

    def power_hint_w(self) -> float | None:
        """The inner meter's power hint times the latest share."""
        hint_w = self.inner.power_hint_w()
        return None if hint_w is None else hint_w * self._share

    def close(self) -> None:
        """Close the inner meter."""
        self.inner.close()


NODE_REASON = (
    "the rest of a shared node (fans, NIC, storage) is not split between jobs: with "
    "attribution='process' only the job's own components are measured"
)
NODE_FIX = "attribution='host' measures the whole node, its rest included"


def attribute(meters: Sequence[Meter], decision: Decision, tree: ProcessTree | None) -> Found:
    """The meters a run reads under ``decision``: host-level and shared ones as the job's share.

    With ``process``, CPU meters take the tree's CPU share and DRAM meters its memory share;
    a GPU meter whose ``process_share`` finds other processes on it takes their SM-utilisation
    share. Meters already shared (a MIG slice) and everything under ``host`` stay as they are.
    A whole-node meter (``other``: the node less every component) is left out with a ``Missing``:
    less the job's shares it would hold the other jobs' CPU and memory energy. A GPU meter with
    no per-process view (AMD, Intel, a SoC's rails) stays whole, with a note saying so.
    """
    if decision.mode == "host" or tree is None:
        return Found(meters=list(meters))
    found = Found()
    for meter in meters:
        if EVERY_OTHER_DEVICE in meter.info.minus:
            meter.close()
            found.missing.append(
                Missing(meter.info.component, meter.info.device, NODE_REASON, NODE_FIX)
            )
            continue
        share = None if isinstance(meter, SharedMeter) else _share_of(meter, tree)
        if share is None:
            found.meters.append(meter)
            if meter.info.component == "gpu" and not _has_process_view(meter):
                found.notes.append(
                    f"{meter.info.device} ({meter.info.model}) gives no per-process figures: "
                    "attribution='process' counts it whole, other processes' use of it included"
                )
        else:
            label = "process" if meter.info.host_level else "attributed"
            found.meters.append(SharedMeter(meter, share, label))
    return found


def _has_process_view(meter: Meter) -> bool:
    """Whether the meter can tell this job's use of its device from others' (NVML can)."""
    return type(meter).process_share is not Meter.process_share


def _share_of(meter: Meter, tree: ProcessTree) -> Share | None:
    """How the tree's share of ``meter``'s device is measured; None where it is the job's whole."""
    info = meter.info
    if info.host_level and info.component == "cpu":
        return tree.cpu_share
    if info.host_level and info.component == "dram":
        return tree.memory_share
    if info.component == "gpu":
        return meter.process_share(tree.pids)
    return None


def decide(requested: Attribution) -> Decision:
    """The attribution a run uses: ``requested``, or for ``auto`` what this machine calls for.

    ``auto`` gives ``process`` when the job holds only part of the machine: a SLURM allocation of
    fewer CPUs than the node has, a cgroup v2 cpu quota (``cpu.max``) or cpuset
    (``cpuset.cpus.effective``) smaller than the host, or another person's process running when
    the run starts; else ``host``.
    """
    if requested != "auto":
        return Decision(requested, requested, "as requested")
    host_cpus = psutil.cpu_count(logical=True) or 0
    for reason in (_slurm_part(host_cpus), _cgroup_part(host_cpus), _others_running()):
        if reason:
            return Decision("process", "auto", reason)
    return Decision("host", "auto", "the job holds the whole machine")


def _slurm_part(host_cpus: int) -> str:
    """Why a SLURM allocation is part of this node, or ''."""
    text = os.environ.get("SLURM_CPUS_ON_NODE") or os.environ.get("SLURM_JOB_CPUS_PER_NODE", "")
    match = re.match(r"\s*(\d+)", text)
    if not match or not host_cpus:
        return ""
    cpus = int(match.group(1))
    if 0 < cpus < host_cpus:
        return f"the SLURM allocation holds {cpus} of this node's {host_cpus} CPUs"
    return ""


def _cgroup_part(host_cpus: int) -> str:
    """Why this process's cgroup (v2) holds part of the host's CPUs, or ''."""
    directory = _cgroup_dir()
    if directory is None or not host_cpus:
        return ""
    cpus = _cpuset_size(directory / "cpuset.cpus.effective")
    if cpus is not None and cpus < host_cpus:
        return f"the cgroup's cpuset holds {cpus} of the host's {host_cpus} CPUs"
    root = sysfs.sysfs_path("fs", "cgroup")
    levels = [directory, *(d for d in directory.parents if d.is_relative_to(root))]
    quota = min((q for d in levels if (q := _cpu_quota(d / "cpu.max"))), default=None)
    if quota is not None and quota < host_cpus:
        return f"the cgroup's cpu quota is {quota:g} of the host's {host_cpus} CPUs"
    return ""


def _cgroup_dir() -> Path | None:
    """This process's cgroup v2 directory under the sysfs root, from ``/proc/self/cgroup``."""
    try:
        with open("/proc/self/cgroup", encoding="ascii", errors="replace") as lines:
            entry = next((line[3:].strip() for line in lines if line.startswith("0::")), None)
    except OSError:
        return None
    if entry is None:
        return None
    return sysfs.sysfs_path("fs", "cgroup", *entry.strip("/").split("/"))


def _cpu_quota(path: Path) -> float | None:
    """CPUs allowed by a ``cpu.max`` (``"200000 100000"``: 2), None for ``max`` or no file."""
    try:
        quota, period = (int(part) for part in sysfs.read_attribute(path).split()[:2])
    except (OSError, ValueError):  # "max ...", garbage, or a single field
        return None
    return quota / period if quota > 0 and period > 0 else None


def _cpuset_size(path: Path) -> int | None:
    """The number of CPUs in a cpuset list (``"0-3,8"``: 5), None where it cannot be read.

    A list that is not ``N`` and ``N-M`` ranges (``M >= N``) is None: garbage says nothing.
    """
    try:
        text = sysfs.read_attribute(path).strip()
    except OSError:
        return None
    ranges = []
    for part in filter(None, text.split(",")):
        match = _CPU_RANGE.fullmatch(part)
        if match is None or int(match[2] or match[1]) < int(match[1]):
            return None
        ranges.append((int(match[1]), int(match[2] or match[1])))
    count, next_cpu = 0, 0  # overlapping ranges count each CPU once
    for first, last in sorted(ranges):
        count += max(last + 1 - max(first, next_cpu), 0)
        next_cpu = max(next_cpu, last + 1)
    return count or None


def _others_running() -> str:
    """Why other people are using this machine (one of their processes is running now), or ''."""
    own = os.getuid() if hasattr(os, "getuid") else None
    if own is None:
        return ""
    for process in psutil.process_iter(["uids", "status"]):
        uids, status = process.info.get("uids"), process.info.get("status")
        if uids is None or status != psutil.STATUS_RUNNING:
            continue
        if uids.real != own and uids.real >= _FIRST_UID:
            return f"another user's process (uid {uids.real}) is running on this machine"
    return ""


def _clamped(share: float) -> float:
    return min(max(share, 0.0), 1.0)
