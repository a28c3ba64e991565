"""One rank of a simulated multi-host job, started by tests/test_distributed.py as a subprocess.

    python -m tests.distributed.dist_worker '<json config>'

The launcher's environment says who this rank is (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT)
and which host it is on (WATTPRINT_HOSTNAME, WATTPRINT_POWERCAP_ROOT). The config says what the
simulated hardware is: the GPUs this host's NVML shows (none: no driver), which zones of the
host's powercap tree this rank drives and with how many joules per epoch, how long the rank dawdles
before each ``epoch_end``, and where to write the truth it knows. Each epoch, every rank is inside
its epoch before the host's counters move and none leaves it before they have stopped (two
barriers), so whichever rank measures a host sees exactly the joules driven into it. With
``barrier: false`` the ranks never wait for each other; with ``crash_after: N`` the rank dies
in epoch N + 1 without closing it or stopping its tracker.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch.distributed as dist

from tests.fake_nvml import SimulatedGPU, constant_power, install_fake_nvml, install_no_nvml
from tests.fake_powercap import FakeZone
from tracker import Tracker


def main(config: dict[str, Any]) -> None:
    """Run ``config["epochs"]`` epochs under a Tracker and write what truly happened."""
    patch = pytest.MonkeyPatch()
    gpus = [SimulatedGPU(power_w=constant_power(w)) for w in config["gpu_w"]]
    if gpus:
        install_fake_nvml(patch, gpus)
    else:
        install_no_nvml(patch)
    zones = {
        name: (FakeZone(Path(path), name, range_uj), joules)
        for name, (path, range_uj, joules) in config["drive"].items()
    }
    dist.init_process_group("gloo")
    local = int(os.environ["LOCAL_RANK"])
    truth: list[dict[str, float]] = []
    tracker = Tracker(
        "job", config["log_dir"], intensity=config["intensity"], interval=0.05, verbose=0
    )
    hook_s: list[float] = []  # how long each epoch_end held up the training loop
    with tracker:
        for epoch in range(config["epochs"]):
            tracker.epoch_start()
            if epoch == config.get("crash_after"):
                time.sleep(0.3)
                os._exit(3)  # dies mid-epoch without a word: no epoch_end, no stop
            if config.get("barrier", True):
                dist.barrier()  # every rank is inside the epoch
            driven = {}
            for name, (zone, joules) in zones.items():
                zone.add_energy_j(joules)
                driven[name] = joules
            if config.get("barrier", True):
                dist.barrier()  # the host counters have stopped moving
            time.sleep(config["dawdle_s"])  # ranks reach epoch_end at different times
            called_s = time.monotonic()
            record = tracker.epoch_end()
            hook_s.append(time.monotonic() - called_s)
            gpu_j = gpus[local].energy_j(record.start_s, record.end_s) if gpus else 0.0
            truth.append({"gpu_j": gpu_j, **driven})
        stopping_s = time.monotonic()
    stop_s = time.monotonic() - stopping_s
    result = {
        "truth": truth,
        "run_dir": str(tracker.run_dir),
        "epoch_end_s": hook_s,
        "stop_s": stop_s,
    }
    Path(config["out"]).write_text(json.dumps(result))
    if config.get("barrier", True):
        dist.destroy_process_group()


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
