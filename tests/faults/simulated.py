"""Faulty hardware and a faulty disk, simulated at the boundary; everything above runs for real.

* ``ConstantPowerMeter``: a power meter with an exact truth (power x time), for runs in
  subprocesses and under a jumping wall clock.
* ``StallingMeter``: a slow meter whose read, once armed, blocks the sampler thread until
  released, which is what a sampler starved of the CPU looks like to the code that measures.
* ``FillingDisk``: ``open`` as ``tracker.output.logs`` sees it; when full, a write puts half of
  its bytes on disk and raises ENOSPC, as a real write that runs out of space part-way does.
"""

from __future__ import annotations

import builtins
import errno
import os
import threading
import time
from pathlib import Path
from typing import IO, Any

from backends.base import Component, Meter, MeterInfo, Method, Reading

SAMPLER_THREAD = "wattprint-sampler"
WAIT_S = 30.0  # bound on every wait: a hang fails the test instead of blocking the suite


class ConstantPowerMeter(Meter):
    """A fast power meter drawing ``power_w`` at every moment: epoch energy = power x duration."""

    def __init__(
        self,
        device: str = "gpu0",
        power_w: float = 200.0,
        component: Component = "gpu",
        method: Method = "power",
    ) -> None:
        self.info = MeterInfo(device, component, "simulated board", method, host_level=False)
        self.power_w = power_w

    def read(self) -> Reading:
        return Reading(t_s=time.monotonic(), power_w=self.power_w)


class StallingMeter(Meter):
    """A slow counter reading 0 J whose sampler-thread read blocks while ``stall()`` holds it.

    Reads on any other thread return at once. ``stalled`` is set when the sampler thread is
    stuck in a read; ``release()`` lets it go.
    """

    fast = False

    def __init__(self, device: str = "stall0", component: Component = "cpu") -> None:
        self.info = MeterInfo(device, component, "stalling meter", "counter", host_level=True)
        self.stalled = threading.Event()
        self._armed = threading.Event()
        self._released = threading.Event()

    def stall(self) -> None:
        """Block the sampler thread in its next read of this meter."""
        self._released.clear()
        self._armed.set()

    def release(self) -> None:
        """Let the sampler thread's read return."""
        self._armed.clear()
        self._released.set()

    def read(self) -> Reading:
        if self._armed.is_set() and threading.current_thread().name == SAMPLER_THREAD:
            self.stalled.set()
            self._released.wait(WAIT_S)
        return Reading(t_s=time.monotonic(), energy_j=0.0)


class FillingDisk:
    """The file boundary of ``tracker.output.logs``: install with
    ``monkeypatch.setattr(logs, "open", disk.open, raising=False)``; set ``full`` to make writes
    fail with ENOSPC.

    ``refused`` counts the writes that failed.
    """

    def __init__(self) -> None:
        self.full = False
        self.refused = 0

    def open(
        self, file: str | os.PathLike[str], mode: str = "r", **kwargs: Any
    ) -> IO[Any] | _FillingFile:
        if self.full and not Path(file).exists() and any(m in mode for m in "wax"):
            self.refused += 1
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(file))
        real: IO[Any] = builtins.open(file, mode, **kwargs)  # noqa: SIM115 - returned open
        return _FillingFile(real, self) if any(m in mode for m in "wa+") else real


class _FillingFile:
    """A file whose writes fail half-way while its disk is full."""

    def __init__(self, real: IO[Any], disk: FillingDisk) -> None:
        self._real = real
        self._disk = disk

    def write(self, data: Any) -> int:
        if self._disk.full:
            self._disk.refused += 1
            self._real.write(data[: len(data) // 2])
            self._real.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return int(self._real.write(data))

    def __enter__(self) -> _FillingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._real.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)
