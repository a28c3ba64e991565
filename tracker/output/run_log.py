"""What a running tracker writes and says as its epochs close.

The run's files (``LogWriter``), ``run.json`` rewritten on the sampler thread (rewrites queued
meanwhile coalesce into one, so a burst of short epochs costs one write), the power timeline, one
line per epoch when verbose, and the user's epoch callbacks (one that raises is warned about once
and never reaches the training loop).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tracker.measure.predict import prediction_line
from tracker.measure.sampler import TimelinePoint
from tracker.notices import Notices
from tracker.output.console import epoch_line, say
from tracker.output.logs import LogWriter
from tracker.records import EpochRecord, Prediction

EpochCallback = Callable[[EpochRecord], object]


class RunLog:
    """One run's log files and console lines; ``describe`` gives run.json's contents now."""

    def __init__(
        self,
        run_dir: Path,
        notices: Notices,
        verbose: int,
        callbacks: Sequence[EpochCallback],
        describe: Callable[[], dict[str, Any]],
        to_unix: Callable[[float], float],
    ) -> None:
        self.writer = LogWriter(run_dir, notices)
        self.started_s = 0.0  # the monotonic start of the run, for the timeline's elapsed_s
        self._notices = notices
        self._verbose = verbose
        self._callbacks = callbacks  # the Tracker's list: callbacks added later are called too
        self._describe = describe
        self._to_unix = to_unix
        self._queued = threading.Event()
        self._lock = threading.Lock()  # the sampler thread and a signal handler both write

    def say(self, *lines: str) -> None:
        """Print wattprint's ``lines`` on stderr when verbose."""
        if self._verbose:
            for line in lines:
                say(line)

    def epoch(self, record: EpochRecord, provenance: Any, prediction: Prediction | None) -> None:
        """Write a closed epoch's rows, say its line (and the prediction, once made), call back."""
        self.writer.write_epoch(record, provenance)
        if self._verbose:
            say(epoch_line(record))
            if prediction is not None:
                say(prediction_line(prediction))
        for callback in self._callbacks:
            name = getattr(callback, "__qualname__", repr(callback))
            self._notices.shielded(
                f"callback:{name}", f"epoch callback {name}", functools.partial(callback, record)
            )

    def queue_run_json(self, call_soon: Callable[[Callable[[], None]], None]) -> None:
        """Rewrite run.json on the sampler thread, unless a rewrite is already waiting there."""
        if not self._queued.is_set():
            self._queued.set()
            call_soon(self.write_run_json)

    def write_run_json(self, document: dict[str, Any] | None = None) -> None:
        """Rewrite run.json now, from ``document`` or the run as it stands."""
        with self._lock:
            self._queued.clear()
            self.writer.write_run_json(document if document is not None else self._describe())

    def timeline(self, points: list[TimelinePoint]) -> None:
        """Append power timeline points: (monotonic s, device, average W since the last)."""
        to_unix, started_s = self._to_unix, self.started_s
        self.writer.write_samples((to_unix(t), t - started_s, d, w) for t, d, w in points)
