"""One measurement in a fresh process: ``python -m benchmarks.child '<json task>'``.

Every figure the suite reports for a tool comes from a process of its own, so tools never share
threads, NVML sessions or imports, and start-up and memory are those of a fresh process. The task
names what to measure; the result is printed as one ``@@result {json}`` line (tools print freely).
Only the standard library is imported before a task starts, so start-up timing begins clean.
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import stat
import sys
import tempfile
import time
import traceback
from typing import Any

RESULT_MARK = "@@result "


def main(argv: list[str]) -> None:
    """Run the task given as JSON in ``argv[0]`` and print its result line."""
    task: dict[str, Any] = json.loads(argv[0])
    try:
        result = TASKS[task["kind"]](task)
    except Exception as error:  # report, never hide: the parent puts it in the notes
        traceback.print_exc()
        result = {"error": f"{type(error).__name__}: {error}"}
    sys.stdout.flush()
    print(RESULT_MARK + json.dumps(result), flush=True)


def startup(task: dict[str, Any]) -> dict[str, Any]:
    """Seconds to import the tool, construct it and return from the first ``epoch_start``."""
    from benchmarks.tools import ALL, Options

    tool, options = ALL[task["tool"]], Options(log_dir=tempfile.mkdtemp(prefix="bench-"))
    started = time.perf_counter()
    session = tool.open(options)
    session.epoch_start()
    seconds = time.perf_counter() - started
    session.epoch_end()
    session.close()
    return {"seconds": seconds}


def memory(task: dict[str, Any]) -> dict[str, Any]:
    """Peak RSS (MB) of this process after idling ``idle_s`` tracked (or untracked for "none")."""
    idle_s = float(task["idle_s"])
    if task["tool"] == "none":
        time.sleep(idle_s)
    else:
        from benchmarks.tools import ALL, Options

        session = ALL[task["tool"]].open(Options())
        session.epoch_start()
        time.sleep(idle_s)
        session.epoch_end()
        session.close()
    return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def hooks(task: dict[str, Any]) -> dict[str, Any]:
    """Wall time (ms) of every ``epoch_start`` and ``epoch_end`` over short busy epochs."""
    from benchmarks.tools import ALL, Options
    from benchmarks.workload import EpochPlan, run_epoch

    load = _prepare(task)
    session = ALL[task["tool"]].open(Options(sync_cuda=_cuda_sync(task)))
    plan = EpochPlan(float(task["epoch_s"]), 0.7, 0.05, 600.0)
    start_ms, end_ms = [], []
    for _ in range(int(task["epochs"])):
        t0 = time.perf_counter()
        session.epoch_start()
        start_ms.append((time.perf_counter() - t0) * 1e3)
        run_epoch(plan, load)
        t0 = time.perf_counter()
        session.epoch_end()
        end_ms.append((time.perf_counter() - t0) * 1e3)
    session.close()
    return {"start_ms": start_ms, "end_ms": end_ms}


def cpu(task: dict[str, Any]) -> dict[str, Any]:
    """CPU seconds per wall second of this process while the tool tracks an open epoch."""
    from benchmarks.tools import ALL, Options

    _prepare(task)
    interval = task.get("interval_s")
    session = None
    if task["tool"] != "none":
        session = ALL[task["tool"]].open(Options(interval_s=interval))
        session.epoch_start()
    time.sleep(float(task.get("warmup_s", 1.0)))
    cpu0, wall0 = time.process_time(), time.monotonic()
    time.sleep(float(task["seconds"]))
    share = (time.process_time() - cpu0) / (time.monotonic() - wall0)
    if session is not None:
        session.epoch_end()
        session.close()
    return {"cpu_share": share}


def accuracy(task: dict[str, Any]) -> dict[str, Any]:
    """Per-epoch GPU energy from the tool beside the truth, over bursty epochs.

    Simulated boards give two truths: the exact energy of the power trace over the epoch, and what
    the energy counter read at the edges says. Real GPUs give the second, read through NVML
    directly just before each hook, after the GPUs have finished their queued work.
    """
    from benchmarks.tools import ALL, Options
    from benchmarks.workload import epoch_plans, run_epoch

    load = _prepare(task)
    plans = epoch_plans(int(task["epochs"]), task["shortest_s"], task["longest_s"])
    truth = _Truth(task)
    session = ALL[task["tool"]].open(Options(sync_cuda=_cuda_sync(task)))
    rows: dict[str, list[float | None]] = {"tool_j": [], "counter_j": [], "exact_j": []}
    for index, plan in enumerate(plans):
        if index % 2:
            load.idle(0.3)  # an evaluation pause between some epochs
        begin = truth.read()
        session.epoch_start()
        run_epoch(plan, load)
        end = truth.read()
        rows["tool_j"].append(session.epoch_end())
        rows["counter_j"].append(end[0] - begin[0])
        exact = None if end[1] is None or begin[1] is None else end[1] - begin[1]
        rows["exact_j"].append(exact)
    session.close()
    return rows


def slowdown(task: dict[str, Any]) -> dict[str, Any]:
    """Steps per second of a small training loop, untracked and tracked, in alternating blocks.

    Each tracked block is one epoch of a tool opened just before it; a short untimed epoch first
    takes the one-off cost of a first ``epoch_start`` (reported by the hook benchmark) out of it.
    """
    from benchmarks.tools import ALL, Options
    from benchmarks.workload import TrainingStep

    _prepare(task)
    tool = ALL[task["tool"]]
    step = TrainingStep()
    block_s = float(task["block_s"])
    _block(step, 0.5, None)  # warm caches and allocators
    rates: dict[str, list[float]] = {"untracked": [], "tracked": []}
    for pair in range(int(task["pairs"])):
        for tracked in (False, True) if pair % 2 == 0 else (True, False):
            session = tool.open(Options()) if tracked else None
            if session is not None:
                _block(step, 0.05, session)
            rates["tracked" if tracked else "untracked"].append(_block(step, block_s, session))
            if session is not None:
                session.close()
    return rates


def _block(step: Any, seconds: float, session: Any) -> float:
    """Run training steps for ``seconds`` as one epoch; return steps per second."""
    steps = 0
    started = time.perf_counter()
    if session is not None:
        session.epoch_start()
    while time.perf_counter() < started + seconds:
        step()
        steps += 1
    if session is not None:
        session.epoch_end()
    return steps / (time.perf_counter() - started)


class _Truth:
    """Reads the truth at an epoch edge: (counter J, exact J or None) summed over the GPUs."""

    def __init__(self, task: dict[str, Any]) -> None:
        self._sim = task["setting"] == "sim"
        if not self._sim:
            from concurrent.futures import ThreadPoolExecutor

            import pynvml

            pynvml.nvmlInit()
            self._pynvml = pynvml
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in _visible(pynvml)]
            self._pool = ThreadPoolExecutor(max_workers=len(self._handles))

    def read(self) -> tuple[float, float | None]:
        now = time.monotonic()
        if self._sim:
            gpus = _SIM_GPUS
            counter_j = sum(g.counter_mj(now) for g in gpus) / 1e3
            return counter_j, sum(g.energy_j(g.counter_origin_s, now) for g in gpus)
        read = self._pynvml.nvmlDeviceGetTotalEnergyConsumption
        total_mj = sum(self._pool.map(read, self._handles))  # all GPUs at once: one instant
        return total_mj / 1e3, None


_SIM_GPUS: list[Any] = []


def _visible(pynvml: Any) -> list[int]:
    """NVML indices of the GPUs the load runs on: ``CUDA_VISIBLE_DEVICES`` (indices) or all."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None and all(part.strip().isdigit() for part in listed.split(",")):
        return [int(part) for part in listed.split(",")]
    return list(range(pynvml.nvmlDeviceGetCount()))


def _cuda_sync(task: dict[str, Any]) -> bool:
    """Whether tools may synchronise CUDA here (Zeus does it through torch)."""
    if task["setting"] != "host" or importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _prepare(task: dict[str, Any]) -> Any:
    """Install the simulated NVML for a "sim" task; return the load that drives the GPUs."""
    from benchmarks.workload import MatmulLoad, SimLoad

    if task["setting"] == "sim":
        from benchmarks.workload import IDLE_W
        from tests.fake_nvml import SimulatedNVML, constant_power, hopper

        count = int(task.get("gpus", 1))
        _SIM_GPUS[:] = [
            hopper(constant_power(IDLE_W), phase_s=0.037 * (i + 1)) for i in range(count)
        ]
        SimulatedNVML(_SIM_GPUS).install()
        _nvidia_smi_on_path()
        return SimLoad(_SIM_GPUS)
    if task.get("load") == "matmul":
        import torch

        return MatmulLoad(torch)
    return SimLoad([])


def _nvidia_smi_on_path() -> None:
    """Put an ``nvidia-smi`` that answers first on ``PATH``, for the simulated boards.

    CodeCarbon looks for that command before it asks NVML for GPUs.
    """
    folder = tempfile.mkdtemp(prefix="sim-nvidia-smi-")
    script = os.path.join(folder, "nvidia-smi")
    with open(script, "w") as file:
        file.write("#!/bin/sh\necho 'simulated nvidia-smi'\n")
    os.chmod(script, stat.S_IRWXU)
    os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")


TASKS = {
    "startup": startup,
    "memory": memory,
    "hooks": hooks,
    "cpu": cpu,
    "accuracy": accuracy,
    "slowdown": slowdown,
}

if __name__ == "__main__":
    main(sys.argv[1:])
