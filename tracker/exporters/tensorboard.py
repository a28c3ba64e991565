"""``TensorBoard``: each epoch's figures as TensorBoard scalars, one step per epoch.

    from tracker.exporters import TensorBoard
    Tracker(location="DE", exporters=[TensorBoard("runs/resnet")])

The scalars are those the framework callbacks log (``wattprint/co2_g``, ``wattprint/it_energy_j``,
...) at step = the epoch's number. They are written with the ``tensorboard`` package's own event
writer (no TensorFlow or PyTorch needed) to an event file of their own in ``log_dir``: give the
directory your ``SummaryWriter`` writes to and they appear beside the run's losses. The file is
flushed at every epoch, so a run that dies keeps its epochs. Scalars are float32.
"""

from __future__ import annotations

import os
import time
from typing import Any

from tracker import arguments
from tracker.exporters.base import Exporter, RunInfo, epoch_metrics, require
from tracker.records import EpochRecord, RunSummary


class TensorBoard(Exporter):
    """Writes scalars to an event file in ``log_dir``. Needs ``wattprint[tensorboard]``."""

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        self.log_dir = arguments.directory("log_dir", log_dir)
        if self.log_dir.exists() and not self.log_dir.is_dir():
            raise ValueError(f"TensorBoard: log_dir {self.log_dir} is a file, not a directory")
        require("tensorboard", "tensorboard", "TensorBoard")
        self._writer: Any = None  # tensorboard ships no type hints

    def start(self, run: RunInfo) -> None:
        """Open a new event file in ``log_dir``."""
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(self.log_dir), filename_suffix=".wattprint")

    def epoch(self, record: EpochRecord) -> None:
        """Write the epoch's scalars at step ``record.epoch`` and flush them to disk."""
        if self._writer is None:
            return
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=k, simple_value=v) for k, v in epoch_metrics(record).items()]
        event = Event(wall_time=time.time(), step=record.epoch, summary=Summary(value=values))
        self._writer.add_event(event)
        self._writer.flush()

    def stop(self, summary: RunSummary) -> None:
        """Close the event file."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
