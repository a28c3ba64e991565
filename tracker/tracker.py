"""``Tracker``: wraps a training loop, cuts energy and emissions at epoch boundaries, writes logs.

The training loop is sacred: meters, log writes, the carbon module and user callbacks fail inside
the tracker (each marked and warned about once) and never in the caller. Only misuse of the API
itself (bad arguments, ``epoch_end`` without ``epoch_start``) raises, with a ``ValueError`` that
names the argument and what is accepted.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil

from backends.attribution import Decision, ProcessTree, attribute, decide
from backends.base import COMPONENTS, Component, Meter, MeterError, Missing
from backends.discover import discover
from tracker import arguments
from tracker.carbon.intensity import Constant, IntensityArg, Provenance
from tracker.carbon.pricing import Carbon
from tracker.distributed.process_group import (
    JobLink,
    host_name,
    process_rank,
    slurm_info,
    validated_mode,
)
from tracker.exporters.base import Exporter, ExporterGroup, RunInfo
from tracker.measure import lifecycle
from tracker.measure.book import EpochBook
from tracker.measure.coverage import coverage_lines, not_measured, uncovered
from tracker.measure.cuda_sync import EdgeSync, cuda_indices
from tracker.measure.epochs import build_record, method_label, summarise
from tracker.measure.predict import Predictor
from tracker.measure.sampler import MeterSnapshot, Sampler
from tracker.notices import Notices
from tracker.output.console import summary_line
from tracker.output.run_info import run_document
from tracker.output.run_log import EpochCallback, RunLog
from tracker.records import EpochRecord, RunSummary


class Tracker(lifecycle.SignalledRun):
    """Measures a training run epoch by epoch; use as a context manager or call ``start``/``stop``.

    ``interval`` is the sampler period in seconds; ``location`` a country (ISO2/ISO3/name), a
    ``US-CA``-style state or an ``aws:``/``gcp:``/``azure:`` region (default: env
    ``WATTPRINT_LOCATION``); ``intensity`` overrides it with a constant gCO2e/kWh, a time-series CSV
    or a provider; ``pue`` defaults to the cloud provider's figure for a region, else 1.0; ``gpus``
    picks devices by index or UUID; ``meters`` replaces discovery with explicit meters. With
    ``epochs=N``, the whole run is predicted once after ``epochs_before_pred`` epochs (0: never).
    ``distributed="auto"`` joins an initialised ``torch.distributed`` job at ``start`` (see
    ``tracker.distributed.process_group``); ``False`` measures this process alone.
    ``exporters`` (``tracker.exporters``: Prometheus, OpenTelemetry, MLflow, W&B, TensorBoard)
    each get every epoch, the live power and the totals; one that fails is warned about once.
    ``attribution`` is ``"host"`` (the whole host's CPU and DRAM, whole GPUs), ``"process"``
    (this process tree's share of them, see ``backends.attribution``) or ``"auto"`` (process
    where the job holds part of the machine); None takes env ``WATTPRINT_ATTRIBUTION``, else auto.
    ``sync="auto"`` waits for the tracked CUDA devices at each edge once torch has initialised
    CUDA, so queued kernels count in their own epoch; ``True``/``False`` force it
    (``tracker.measure.cuda_sync``).
    """

    def __init__(
        self,
        project: str = "default",
        log_dir: str | os.PathLike[str] = "wattprint-runs",
        *,
        interval: float = 0.5,
        location: str | None = None,
        intensity: IntensityArg = None,
        pue: float | None = None,
        gpus: Sequence[int | str] | None = None,
        components: Sequence[str] = COMPONENTS,
        meters: Sequence[Meter] | None = None,
        verbose: int = 1,
        on_epoch_end: Sequence[EpochCallback] = (),
        sample_period: float = 1.0,
        rapl_reader: str = "powercap",
        run_id: str | None = None,
        epochs: int | None = None,
        epochs_before_pred: int = 1,
        distributed: bool | str = "auto",
        exporters: Sequence[Exporter] = (),
        attribution: str | None = None,
        sync: bool | str = "auto",
    ) -> None:
        self.project = arguments.name("project", project)
        floor_s, ceiling_s = arguments.MIN_INTERVAL_S, arguments.MAX_INTERVAL_S
        self.interval_s = arguments.seconds("interval", interval, floor_s, ceiling_s)
        self.sample_period_s = arguments.seconds("sample_period", sample_period, floor_s, ceiling_s)
        self.components: tuple[Component, ...] = arguments.components(components)
        self._rapl_reader = arguments.rapl_reader(rapl_reader)
        arguments.check_meters(meters)
        arguments.check_callbacks(on_epoch_end)
        arguments.check_gpus(gpus)
        self.verbose = arguments.verbosity(verbose)
        self._attribution = arguments.attribution(attribution)
        self._decision: Decision | None = None
        self._notices = Notices(quiet=not self.verbose)
        self._exporters = ExporterGroup(exporters, self._notices)
        self._carbon, self._location, self._intensity_warnings = Carbon.for_run(
            location, intensity, pue, self._notices
        )
        self._gpus = gpus
        self._explicit_meters = list(meters) if meters is not None else None
        self._callbacks: list[EpochCallback] = list(on_epoch_end)
        self._predictor = Predictor(epochs, epochs_before_pred)
        self.run_id = run_id if run_id is not None else arguments.new_run_id()
        run_dir = arguments.directory("log_dir", log_dir) / self.project
        self._run_dir = run_dir / arguments.name("run_id", self.run_id)
        arguments.check_fresh_run_dir("run_id", self._run_dir)
        self._host = host_name()
        self._rank, self._slurm = process_rank(), slurm_info()
        self._job_mode = validated_mode(distributed)
        self._sync = EdgeSync(arguments.sync_mode(sync), self._notices)
        self._job: JobLink | None = None  # this process's part in a distributed job
        self._missing: list[Missing] = []
        self._uncovered: frozenset[Component] = frozenset()
        self._sampler: Sampler | None = None
        self._log: RunLog | None = None
        self._started_s = 0.0
        self._start_snapshot: dict[str, MeterSnapshot] = {}
        self._book = EpochBook()
        self._hooks = threading.RLock()  # hooks called from several threads run one at a time
        self._stopped = False
        self._status = "created"
        self._pid = os.getpid()  # in a forked child (a DataLoader worker) the hooks do nothing
        self._command: dict[str, Any] | None = None

    # -- public API ------------------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        """Where this run's logs are written: ``<log_dir>/<project>/<run_id>``.

        In a distributed job rank 0's holds the whole job's, and other ranks write ``rank-<N>``
        in it (``tracker.distributed.process_group``).
        """
        return self._job.run_dir if self._job is not None else self._run_dir

    @property
    def epochs(self) -> list[EpochRecord]:
        """The epochs completed so far."""
        return list(self._book.records)

    @property
    def summary(self) -> RunSummary:
        """Totals over the completed epochs (final once ``stop()`` has run)."""
        return self._summary()

    def record_command(self, argv: Sequence[str], exit_code: int | None = None) -> None:
        """Record the command this run measures (``wattprint run``) and, once known, its exit code.

        Both go to run.json's ``command``; a non-zero exit code makes the run's status ``failed``.
        """
        if isinstance(argv, str) or not all(isinstance(a, str) for a in argv):
            raise ValueError(f"argv must be a sequence of strings, got {argv!r}")
        self._command = {"argv": list(argv), "exit_code": exit_code}
        if exit_code not in (None, 0) and self._status in ("created", "running"):
            self._status = "failed"

    def add_epoch_callback(self, callback: EpochCallback) -> None:
        """Call ``callback(record)`` after every epoch (e.g. to forward it to an experiment log)."""
        if not callable(callback):
            raise ValueError("add_epoch_callback needs a callable taking an EpochRecord")
        self._callbacks.append(callback)

    @lifecycle.holding_signals
    def start(self) -> Tracker:
        """Discover meters, open the run directory and start sampling (idempotent).

        A start that fails leaves nothing running: no sampler thread outlives it.
        """
        if self._pid != os.getpid():  # before the lock: a fork may have copied it held
            return self
        with self._hooks:
            if self._stopped:
                raise ValueError("this Tracker was stopped; create a new Tracker for a new run")
            if self._sampler is not None:
                return self
            try:
                self._start()
            except BaseException:
                self._abandon()
                raise
            return self

    def _start(self) -> None:
        for message in self._intensity_warnings:
            self._notices.warn(f"intensity:{message}", message)
        if job := JobLink.join(self._job_mode, self.project, self.run_id, self._notices):
            self._job, self.run_id, self._rank = job, job.run_id, job.rank
            self._run_dir = job.place(self._run_dir)
            self.components = job.components(self.components)
        meters = self._discover()
        self._log = RunLog(
            self._run_dir,
            self._notices,
            self.verbose,
            self._callbacks,
            self._run_document,
            self._carbon.to_unix,
        )
        self._sampler = Sampler(
            meters,
            self._carbon.co2_g,
            self._notices,
            self.interval_s,
            self.sample_period_s,
            self._log.timeline,
            on_power=self._exporters.interval if self._exporters else None,
        )
        self._exporters.start(self._run_info(meters))
        self._status = "running"
        self._sampler.start()
        self._started_s, self._start_snapshot = self._sampler.snapshot()
        self._log.started_s = self._started_s
        self._log.write_run_json()
        if self._job is not None:
            job_args = (self.components, self._provenance(), self._run_document, self._notices)
            self._job.open(meters, self._missing, *job_args, self.verbose)
        lifecycle.attach(self, self._interrupt, self._resume, self._at_exit)
        measured = ", ".join(f"{m.info.device} ({method_label(m.info)})" for m in meters)
        assert self._decision is not None
        share = f"{self._decision.mode} attribution: {self._decision.reason}"
        self._log.say(
            f"wattprint: run {self.run_id} measuring {measured or 'nothing'} ({share}); "
            f"logs in {self._run_dir}",
            *(f"wattprint: {n}" for n in coverage_lines(meters, self._missing, self.components)),
        )

    def _abandon(self) -> None:
        """Undo a start that failed part-way: stop what it started, keep nothing running."""
        self._stopped, self._status = True, "failed"
        lifecycle.detach(self)
        if self._sampler is not None:
            with contextlib.suppress(Exception):
                self._sampler.stop()
        if self._log is not None:
            with contextlib.suppress(Exception):
                self._log.writer.close()
        with contextlib.suppress(Exception):
            self._exporters.stop(self._summary())

    @lifecycle.holding_signals
    def stop(self) -> RunSummary:
        """Close an open epoch (marked partial), stop sampling and write the final run.json."""
        if self._pid != os.getpid():  # before the lock: a fork may have copied it held
            return self._summary()
        with self._hooks:
            if self._stopped or self._sampler is None:
                self._stopped = True
                return self._summary()
            lifecycle.detach(self)
            if self._book.open is not None:
                self._close_epoch(partial=True)
            self._stopped = True
            if self._status == "running":
                self._status = "finished"
            end_s, end_snapshot = self._sampler.snapshot()
            self._sampler.stop()
            self._carbon.source.close()
            assert self._log is not None
            self._log.write_run_json(self._run_document(session=(end_s, end_snapshot)))
            self._log.writer.close()
            if self._job is not None:
                self._job.finish(wait=self._status == "finished")
            self._exporters.stop(self._summary())  # after the files are final (MLflow's copy)
            summary = self._summary()
            self._log.say(summary_line(summary))
            return summary

    @lifecycle.holding_signals
    def epoch_start(self) -> None:
        """Mark the start of an epoch (starts the tracker on first use)."""
        if self._pid != os.getpid():
            return
        with self._hooks:
            self._book.check_closed()
            if self._stopped:
                raise ValueError("epoch_start() called after stop(); create a new Tracker")
            if self._book.signalled is not None:  # the program caught the signal and went on
                self._lived_on()
            if self._sampler is None:
                self.start()
            assert self._sampler is not None
            self._sync()
            self._book.begin(self._sampler.snapshot())

    @lifecycle.holding_signals
    def epoch_end(self, samples: int | None = None, tokens: int | None = None) -> EpochRecord:
        """Close the open epoch: its energy per component and device, duration and gCO2e.

        ``samples``/``tokens``: work done in the epoch, added to what ``add_work`` counted; the
        record then has the IT energy per sample and per token. After a signal split the epoch
        (and the program caught it and went on), this closes the part since the cut, with the
        same epoch number, both parts marked partial.
        """
        if self._pid != os.getpid():
            return lifecycle.inert_record(self.run_id)
        counts = arguments.work("samples", samples), arguments.work("tokens", tokens)
        with self._hooks:
            self._reopen_after_signal()
            if self._book.open is None:
                raise ValueError("epoch_end() called without a matching epoch_start()")
            self._sync()
            self._book.count(*counts)
            return self._close_epoch()

    # -- work done, for energy per sample and per token --------------------------------------

    @lifecycle.holding_signals
    def add_work(self, *, samples: int | None = None, tokens: int | None = None) -> None:
        """Count work done in the open epoch: ``samples`` and ``tokens`` (whole numbers >= 0).

        Cheap enough to call every step (and from any thread); an epoch's counts add up. Work
        counted while no epoch is open (before the first, between epochs, after ``stop``)
        belongs to none: it is left out, with a warning, once. A bad count raises ``ValueError``
        naming it, before anything is counted.
        """
        if self._pid != os.getpid():
            return
        counts = arguments.work("samples", samples), arguments.work("tokens", tokens)
        with self._hooks:
            self._reopen_after_signal()
            if self._book.open is None:
                self._notices.warn(
                    "work:no-epoch",
                    "add_work() called while no epoch was open; work counted outside an epoch is "
                    "left out of the per-sample and per-token figures",
                )
                return
            self._book.count(*counts)

    def _reopen_after_signal(self) -> None:
        """After a signal closed the epoch and the program went on: measure its second part."""
        if self._book.open is None and not self._stopped and self._book.resume():
            self._lived_on()

    @contextmanager
    def epoch(self) -> Iterator[None]:
        """``with tracker.epoch(): ...`` brackets one epoch; an exception closes it as partial."""
        self.epoch_start()
        try:
            yield
        except BaseException:
            self._close_partial()
            raise
        self.epoch_end()

    def __enter__(self) -> Tracker:
        """Start the run (``start``)."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the run; an exception leaving the block marks it ``failed`` (or ``interrupted``)."""
        if exc_type is not None and self._status == "running":  # a signal's status stays
            self._status = lifecycle.ending_status(exc_type)
        elif exc_type is None:
            self._lived_on()
        self.stop()

    # -- internals -------------------------------------------------------------------------------

    def _discover(self) -> list[Meter]:
        if self._explicit_meters is not None:
            meters = [m for m in self._explicit_meters if m.info.component in self.components]
        else:
            found = discover(self.components, gpus=self._gpus, rapl_reader=self._rapl_reader)
            meters, self._missing = found.meters, found.missing
            for note in found.notes:  # quiet at verbose=0, and kept in run.json either way
                self._notices.warn(f"note:{note}", note)
        if self._job is not None:  # this rank's GPU; the host's meters on one rank per host
            meters, self._missing = self._job.select(meters, self._missing, self._gpus is not None)
        meters = self._attribute(meters)
        self._uncovered = uncovered(meters, self._missing)
        self._sync.devices = cuda_indices(meters)
        return meters

    def _attribute(self, meters: list[Meter]) -> list[Meter]:
        """The job's share of shared meters where attribution is (or ``auto`` finds) ``process``.

        Where the machine or the process tree cannot be read, the run measures the whole host
        and says why, rather than failing.
        """
        try:
            self._decision = decide(self._attribution)
            tree = ProcessTree() if self._decision.mode == "process" else None
            found = attribute(meters, self._decision, tree)
            self._missing = [*self._missing, *found.missing]
            for note in found.notes:
                self._notices.warn(f"note:{note}", note)
            return found.meters
        except (OSError, MeterError, psutil.Error) as error:
            reason = f"the job's share cannot be measured here ({error}); the host is reported"
            self._decision = Decision("host", self._attribution, reason)
            self._notices.warn("attribution", reason)
            return meters

    def _close_epoch(self, partial: bool = False) -> EpochRecord:
        assert self._sampler is not None
        end = self._sampler.snapshot()
        start, split = self._book.end(end)
        record = build_record(
            run_id=self.run_id,
            epoch=self._book.number,
            meters=self._sampler.meters,
            start=start,
            end=end,
            carbon=self._carbon,
            components=self.components,
            host=self._host,
            rank=self._rank,
            partial=partial or split,
            uncovered=self._uncovered,
            samples=self._book.samples,
            tokens=self._book.tokens,
            notices=self._notices,
        )
        self._book.keep(record)
        assert self._log is not None
        prediction = self._predictor.observe(self._book.records)
        self._log.epoch(record, self._provenance(), prediction)
        self._exporters.epoch(record)
        self._sampler.flush_timeline()  # a killed process keeps the timeline up to this edge
        if self._job is not None:
            self._job.submit(record)
        self._log.queue_run_json(self._sampler.call_soon)  # last: waking the thread costs GIL
        return record

    def _run_info(self, meters: Sequence[Meter]) -> RunInfo:
        """What the exporters learn at start: the run, its place and pricing, its meters."""
        return RunInfo(
            project=self.project,
            run_id=self.run_id,
            run_dir=self._run_dir,
            host=self._host,
            rank=self._rank,
            location=self._location.code if self._location is not None else None,
            intensity_source=self._intensity_source(),
            pue=self._carbon.pue,
            devices=tuple(m.info for m in meters),
        )

    def _provenance(self) -> Provenance:
        return self._carbon.source.provenance

    def _intensity_source(self) -> str:
        """The intensity's provenance in one line, as the summary gives it."""
        p = self._carbon.source.provenance
        return f"{p.label}: {p.source} ({p.year}, {p.basis})"

    def _summary(self) -> RunSummary:
        return summarise(
            self.run_id,
            str(self._run_dir),
            self._book.totals,
            self._intensity_source(),
            missing=[f"{m.device}: {m.reason}" for m in self._gaps()],
            warnings=self._notices.messages(),
            pue=self._carbon.pue,
            nominal_intensity=self._nominal_intensity(),
            prediction=self._predictor.prediction,
            prediction_check=self._predictor.check(self._book.totals),
        )

    def _nominal_intensity(self) -> float:
        """The intensity before any energy is priced (the live view's first epoch), in g/kWh.

        A constant source's own value, else the location's table value, else NaN (unknown).
        """
        source = self._carbon.source
        if isinstance(source, Constant):
            return source.g_per_kwh
        return self._location.g_per_kwh if self._location else math.nan

    def _gaps(self) -> list[Missing]:
        meters = self._sampler.meters if self._sampler is not None else []
        return not_measured(meters, self._missing, self.components)

    def _run_document(
        self, session: tuple[float, dict[str, MeterSnapshot]] | None = None
    ) -> dict[str, Any]:
        for message in self._carbon.source.drain_warnings():  # a feed down, a short series
            self._notices.warn(f"intensity:{message}", message)
        return run_document(
            status=self._status,
            started_unix=self._carbon.to_unix(self._started_s),
            stopped_unix=self._carbon.to_unix(session[0]) if session is not None else None,
            host=self._host,
            rank=self._rank,
            interval_s=self.interval_s,
            meters=self._sampler.meters if self._sampler is not None else [],
            missing=self._missing,
            components=self.components,
            carbon=self._carbon,
            location=self._location,
            summary=self._summary(),
            whole_run=(self._start_snapshot, session[1]) if session is not None else None,
            slurm=self._slurm,
            job=self._job.describe() if self._job is not None else None,
            command=self._command,
            attribution=self._decision,
        )
