"""Synchronising the tracked CUDA devices at epoch edges, so queued GPU work lands in its epoch.

CUDA kernels run asynchronously: work queued before ``epoch_end`` may run after it and be charged
to the next epoch. ``sync="auto"`` (the default) waits at each edge for the tracked devices only,
and only when torch is already imported and has initialised CUDA in this process; it never
imports torch, so a run without CUDA pays nothing. ``sync=True`` synchronises whenever torch is
imported (initialising CUDA if it is not yet) and warns once where torch is not imported;
``sync=False`` never synchronises. A synchronisation that raises is warned about once and the
edge is cut anyway: it never reaches the training loop.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

from backends.base import Meter
from tracker.arguments import SyncMode
from tracker.notices import Notices

_GPU_NAME = re.compile(r"gpu(\d+)")


def cuda_indices(meters: Sequence[Meter]) -> tuple[int, ...]:
    """The CUDA device indices of the tracked GPUs, in order.

    Discovery names GPUs ``gpuN`` with N the index CUDA gives them in this process
    (``CUDA_VISIBLE_DEVICES`` applied, see ``backends.gpu.nvidia.find_gpus``).
    """
    indices = []
    for meter in meters:
        match = _GPU_NAME.fullmatch(meter.info.device)
        if meter.info.component == "gpu" and match and int(match[1]) not in indices:
            indices.append(int(match[1]))
    return tuple(indices)


class EdgeSync:
    """Waits for the tracked CUDA devices at an edge, as ``mode`` says (module docstring)."""

    def __init__(self, mode: SyncMode, notices: Notices) -> None:
        self.mode = mode
        self.devices: tuple[int, ...] = ()
        self._notices = notices

    def __call__(self) -> None:
        """Synchronise the tracked devices now, or do nothing (never raises)."""
        if self.mode is False or not self.devices:
            return
        cuda = getattr(sys.modules.get("torch"), "cuda", None)
        if cuda is None:
            if self.mode is True:
                self._notices.warn(
                    "sync:torch",
                    "sync=True, but torch is not imported: epoch edges are not synchronised "
                    "with the GPUs (import torch before the first epoch)",
                )
            return
        try:
            if self.mode == "auto" and not cuda.is_initialized():
                return
            for index in self.devices:
                cuda.synchronize(index)
        except Exception as error:  # a CUDA error belongs to the training loop, not the edge
            self._notices.warn(
                "sync:failed",
                f"synchronising CUDA devices {list(self.devices)} at an epoch edge failed "
                f"({type(error).__name__}: {error}); edges are cut without waiting for the GPUs",
            )
