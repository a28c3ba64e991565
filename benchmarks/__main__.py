"""``python -m benchmarks``: wattprint beside carbontracker, CodeCarbon and Zeus, as one table.

    python -m benchmarks [--quick] [--only hooks,startup] [--tools wattprint,zeus]
                         [--csv results.csv] [--json results.json]
    python -m benchmarks hook-cost [...]   wattprint's hooks alone, on slow simulated counters
    python -m benchmarks soak [...]        the long-running soak test (benchmarks/soak.py)
    python -m benchmarks gpu-check [...]   NVML facts and wattprint on one real (or --simulated) GPU

Peers are measured where installed (``pip install -e '.[bench]'``, best in a venv of its own);
benchmarks that need a real NVIDIA GPU say so and are skipped elsewhere.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import platform
import subprocess
import sys
import time
from typing import Any

from backends.cpu.cpuinfo import cpu_info
from benchmarks import gpu_check, hook_cost
from benchmarks.report import table, write_csv, write_json
from benchmarks.suite import BENCHMARKS, FULL, QUICK, Context, run, tool_versions
from benchmarks.tools import ALL, TOOLS


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand, or run the suite and print its table."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "hook-cost":
        hook_cost.main(argv[1:])
        return 0
    if argv and argv[0] == "soak":
        return _soak(argv[1:])
    if argv and argv[0] == "gpu-check":
        return gpu_check.main(argv[1:])
    args = _parser().parse_args(argv)
    selected = _listed(args.only, BENCHMARKS, "--only")
    wanted = _listed(args.tools, TOOLS, "--tools")
    installed = tuple(t for t in wanted if ALL[t].missing_reason() is None)
    for tool in wanted:
        if (reason := ALL[tool].missing_reason()) is not None:
            _say(f"{tool}: {reason}; its columns stay empty")
    gpu_count, gpu_names = _nvml_gpus()
    context = Context(
        tools=installed,
        scale=QUICK if args.quick else FULL,
        gpu_count=gpu_count,
        cuda_torch=bool(gpu_count) and _cuda_torch(),
        say=_say,
    )
    started, started_utc = time.monotonic(), time.gmtime()
    rows = run(context, selected)
    for row in rows:
        for tool in wanted:
            if (reason := ALL[tool].missing_reason()) is not None:
                row.notes.setdefault(tool, reason)
    seconds = time.monotonic() - started
    environment = _environment(gpu_names, args.quick, started_utc, seconds)
    print(_heading(environment))
    print(table(rows))
    if args.csv:
        write_csv(rows, args.csv)
    if args.json:
        write_json(rows, args.json, environment)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--quick", action="store_true", help="short runs (about a minute)")
    parser.add_argument("--only", default="", help=f"comma-separated from: {', '.join(BENCHMARKS)}")
    parser.add_argument("--tools", default="", help=f"comma-separated from: {', '.join(TOOLS)}")
    parser.add_argument("--csv", metavar="FILE", help="also write the rows as CSV")
    parser.add_argument("--json", metavar="FILE", help="also write rows and environment as JSON")
    return parser


def _listed(value: str, accepted: tuple[str, ...], option: str) -> tuple[str, ...]:
    if not value:
        return accepted
    chosen = tuple(part.strip() for part in value.split(",") if part.strip())
    unknown = [c for c in chosen if c not in accepted]
    if unknown:
        raise SystemExit(f"{option}: unknown {unknown}; accepted: {', '.join(accepted)}")
    return chosen


def _soak(argv: list[str]) -> int:
    if importlib.util.find_spec("benchmarks.soak") is None:
        _say("benchmarks/soak.py is not in this checkout")
        return 2
    soak_main: Any = importlib.import_module("benchmarks.soak").main
    result = soak_main(argv)
    return result if isinstance(result, int) else 0


def _nvml_gpus() -> tuple[int, list[str]]:
    """How many GPUs NVML sees here, and their names (0 and [] without a driver)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver, no library: a CPU-only machine
        return 0, []
    try:
        count = int(pynvml.nvmlDeviceGetCount())
        names = [
            str(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)))
            for i in range(count)
        ]
        driver = str(pynvml.nvmlSystemGetDriverVersion())
        return count, [f"{name} (driver {driver})" for name in names]
    finally:
        pynvml.nvmlShutdown()


def _cuda_torch() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    check = "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"
    return subprocess.run([sys.executable, "-c", check], check=False).returncode == 0


def _environment(
    gpu_names: list[str], quick: bool, started_utc: time.struct_time, seconds: float
) -> dict[str, Any]:
    return {
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", started_utc),
        "machine": f"{cpu_info().name}, {os.cpu_count()} cores, {platform.system()} "
        f"{platform.release()}",
        "gpus": gpu_names or ["none"],
        "python": platform.python_version(),
        "wakeup_cpu_us": round(_wakeup_cpu_us(), 1),
        "versions": tool_versions(),
        "mode": "quick" if quick else "full",
        "seconds": round(seconds, 1),
    }


def _heading(environment: dict[str, Any]) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in environment["versions"].items())
    return (
        f"\n{environment['date_utc']} | {environment['machine']} | GPU: "
        f"{'; '.join(environment['gpus'])} | Python {environment['python']} | timed wake-up "
        f"{environment['wakeup_cpu_us']} us CPU\n{versions} | "
        f"{environment['mode']} run, {environment['seconds']} s\n"
    )


def _wakeup_cpu_us(wakeups: int = 20) -> float:
    """CPU time of one timed thread wake-up on this host, in us: what any sampler pays per tick.

    Sampler and follower threads sleep between reads; on a bare-metal Linux host a wake-up costs a
    few us, in some virtual machines and sandboxes 100 us or more, which sets their CPU floor.
    """
    started_s = time.thread_time()
    for _ in range(wakeups):
        time.sleep(0.1)  # a follower's period: idle long enough for the CPU to nap
    return (time.thread_time() - started_s) / wakeups * 1e6


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
