"""The messages between the ranks of a job, through its key-value store, and rank 0's collector.

Keys live under one tracker's prefix: ``run_id`` (rank 0's), ``host/<name>`` (the rank that claimed
the host's meters), ``info/<rank>`` (what a rank measures), ``epoch/<n>/<rank>`` (a rank's figures
for epoch n, a ``RankEpoch``) with the counter ``epoch/<n>/n`` of ranks that posted it, and
``done/<rank>`` (how many epochs a rank ran) with the counter ``done/n``. Rank 0 deletes epoch keys
once it has written the epoch, so the store holds a bounded amount.
"""

from __future__ import annotations

import contextlib
import json
import math
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from backends.base import Component
from tracker.carbon.intensity import Provenance
from tracker.distributed.job import RankEpoch, combine
from tracker.measure.epochs import Totals, summarise
from tracker.notices import Notices
from tracker.output.console import say
from tracker.output.logs import LogWriter
from tracker.output.run_info import totals_document
from tracker.units import figure

DocumentFn = Callable[[], dict[str, Any]]
POLL_S = 0.1


class Channel:
    """JSON messages through the job's key-value store, under one tracker's key prefix."""

    def __init__(self, store: Any, prefix: str) -> None:
        self._store = store
        self._prefix = prefix

    def post(self, key: str, document: Any) -> None:
        """Set ``key`` to ``document`` as JSON, replacing what it held."""
        self._store.set(f"{self._prefix}/{key}", json.dumps(document))

    def has(self, key: str) -> bool:
        """Whether ``key`` has been posted (and not dropped)."""
        return bool(self._store.check([f"{self._prefix}/{key}"]))

    def claim(self, key: str, value: str) -> str:
        """Set ``key`` to ``value`` unless some process set it first; the value it holds."""
        held = self._store.compare_set(f"{self._prefix}/{key}", "", value)
        return held.decode() if isinstance(held, bytes) else str(held)

    def await_read(self, key: str, timeout_s: float) -> Any:
        """``read(key)`` once it is posted, or None after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while not self.has(key):
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_S)
        return self.read(key)

    def read(self, key: str) -> Any:
        """The document posted under ``key``; the store's own error if there is none."""
        return json.loads(self._store.get(f"{self._prefix}/{key}"))

    def count(self, key: str, add: int = 0) -> int:
        """The counter ``key`` after adding ``add`` to it (0: just read it), atomically."""
        return int(self._store.add(f"{self._prefix}/{key}", add))

    def drop(self, *keys: str) -> None:
        """Delete ``keys``, ignoring any that cannot be deleted (best effort)."""
        for key in keys:
            with contextlib.suppress(Exception):
                self._store.delete_key(f"{self._prefix}/{key}")


class Sender:
    """Posts a non-zero rank's figures from a daemon thread, in order."""

    def __init__(self, channel: Channel, notices: Notices) -> None:
        self._channel = channel
        self._notices = notices
        self._queue: queue.Queue[tuple[str, Any, str | None] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="wattprint-job", daemon=True)
        self._thread.start()

    def post(self, key: str, document: Any, counter: str | None = None) -> None:
        """Queue ``document`` for ``key``, then one added to the counter ``counter`` if given."""
        self._queue.put((key, document, counter))

    def close(self, timeout_s: float) -> None:
        """Send what is queued, waiting up to ``timeout_s``; warn if it did not all go."""
        self._queue.put(None)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._notices.warn(
                "distributed:send",
                f"this rank's last figures did not reach rank 0 in {timeout_s:g} s",
            )

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            key, document, counter = item
            try:
                self._channel.post(key, document)
                if counter is not None:
                    self._channel.count(counter, 1)
            except Exception as error:  # rank 0 gone: its totals will say which ranks are missing
                self._notices.warn(
                    "distributed:send",
                    f"could not send this rank's figures to rank 0 ({error!r}); the job's totals "
                    "will lack them",
                )


class Collector:
    """Rank 0's daemon thread: gathers every rank's epochs and writes the job's logs."""

    def __init__(
        self,
        channel: Channel,
        job: tuple[str, int, Path],
        writer: LogWriter,
        own_info: dict[str, Any],
        components: tuple[Component, ...],
        provenance: Provenance,
        document: DocumentFn,
        notices: Notices,
        verbose: int,
    ) -> None:
        self._channel = channel
        self._run_id, self._world_size, self._job_dir = job
        self._writer = writer
        self._infos: dict[int, dict[str, Any]] = {0: own_info}
        self._components = components
        self._provenance = provenance
        self._document = document
        self._notices = notices
        self._verbose = verbose
        self._own: dict[int, RankEpoch] = {}
        self._own_epochs: int | None = None
        self._done: dict[int, int] = {}  # rank -> epochs it ran, once it has stopped
        self._totals = Totals()
        self._incomplete: dict[int, list[int]] = {}
        self._next = 1
        self._lock = threading.Lock()
        self._finishing = threading.Event()
        self._timeout_s = math.inf
        self._thread = threading.Thread(target=self._run, name="wattprint-job", daemon=True)
        self._thread.start()

    def add_own(self, part: RankEpoch) -> None:
        """Hand rank 0's own figures for an epoch to the collector."""
        with self._lock:
            self._own[part.epoch] = part

    def finish(self, own_epochs: int, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for the other ranks' last epochs, then write the rest."""
        with self._lock:
            self._own_epochs = own_epochs
        self._timeout_s = timeout_s
        self._finishing.set()
        self._thread.join(timeout_s + 10.0)

    def _run(self) -> None:
        self._write_document()
        deadline = math.inf
        while True:
            try:
                self._collect()
            except Exception as error:  # the store failed: write what is in hand
                self._notices.warn("distributed:collect", f"collecting ranks failed: {error!r}")
                break
            if self._finishing.is_set():
                deadline = min(deadline, time.monotonic() + self._timeout_s)
                if self._all_in() or time.monotonic() >= deadline:
                    break
            if self._finishing.is_set():
                time.sleep(POLL_S)
            else:
                self._finishing.wait(POLL_S)
        try:
            self._write_stragglers()
        except Exception as error:
            self._notices.warn("distributed:collect", f"collecting ranks failed: {error!r}")
        self._write_document(final=True)
        self._writer.close()
        peers = [f"{kind}/{rank}" for rank in self._peers() for kind in ("done", "info")]
        hosts = [f"host/{info['host']}" for info in self._infos.values()]
        self._channel.drop("run_id", "done/n", f"epoch/{self._next}/n", *peers, *hosts)

    def _peers(self) -> range:
        return range(1, self._world_size)

    def _collect(self) -> None:
        if self._channel.count("done/n") > len(self._done):
            for rank in self._peers():
                if rank not in self._done and self._channel.has(f"done/{rank}"):
                    self._done[rank] = int(self._channel.read(f"done/{rank}")["epochs"])
        while True:
            epoch = self._next
            due = [r for r in self._peers() if self._done.get(r, epoch) >= epoch]
            with self._lock:
                own_due = self._own_epochs is None or self._own_epochs >= epoch
                own = self._own.get(epoch)
            if (own_due and own is None) or not (due or own_due):
                return
            if due and self._channel.count(f"epoch/{epoch}/n") < len(due):
                return
            with self._lock:
                self._own.pop(epoch, None)
            parts = [] if own is None else [own]
            parts += [self._read_part(epoch, rank) for rank in due]
            self._channel.drop(f"epoch/{epoch}/n")
            self._write(epoch, parts, complete=True)

    def _all_in(self) -> bool:
        with self._lock:
            own_epochs = self._own_epochs
        if own_epochs is None or len(self._done) < len(self._peers()):
            return False
        return self._next > max([own_epochs, *self._done.values()])

    def _write_stragglers(self) -> None:
        """At the deadline: write each remaining epoch from the parts that did arrive."""
        while True:
            epoch = self._next
            with self._lock:
                own = self._own.pop(epoch, None)
            parts = [] if own is None else [own]
            parts += [
                self._read_part(epoch, r)
                for r in self._peers()
                if self._channel.has(f"epoch/{epoch}/{r}")
            ]
            if not parts:
                return
            self._incomplete[epoch] = sorted(set(range(self._world_size)) - {p.rank for p in parts})
            self._write(epoch, parts, complete=False)

    def _read_part(self, epoch: int, rank: int) -> RankEpoch:
        part = RankEpoch.from_json(self._channel.read(f"epoch/{epoch}/{rank}"))
        self._channel.drop(f"epoch/{epoch}/{rank}")
        return part

    def _write(self, epoch: int, parts: list[RankEpoch], complete: bool) -> None:
        record = combine(self._run_id, epoch, parts, self._components, complete)
        self._totals.add(record)
        self._next = epoch + 1
        self._writer.write_epoch(record, self._provenance)
        self._write_document()

    def _write_document(self, final: bool = False) -> None:
        try:
            document = self._job_document()
        except Exception as error:  # the document is best effort; the CSVs hold the figures
            self._notices.warn("distributed:run.json", f"job run.json failed: {error!r}")
            return
        self._writer.write_run_json(document)
        if final and self._verbose:
            totals = document["totals"]
            hosts = {info["host"] for info in self._infos.values()}
            say(
                f"wattprint job {self._run_id}: {self._world_size} ranks on "
                f"{len(hosts)} hosts, {totals['epochs']} epochs, "
                f"{figure(totals['facility_energy_kwh'])} kWh, "
                f"{figure(totals['co2_g'])} gCO2e; logs in {self._job_dir}"
            )

    def _job_document(self) -> dict[str, Any]:
        for rank in self._peers():
            if rank not in self._infos and self._channel.has(f"info/{rank}"):
                self._infos[rank] = self._channel.read(f"info/{rank}")
        base = self._document()
        infos = [self._infos[r] for r in sorted(self._infos)]
        missing = [
            f"rank {i['rank']} ({i['host']}) {m['device']}: {m['reason']}"
            for i in infos
            for m in i["missing"]
        ]
        summary = summarise(
            self._run_id,
            str(self._job_dir),
            self._totals,
            base["totals"].get("intensity_source", ""),
            missing=missing,
            warnings=base.get("warnings", ()),
        )
        return base | {
            "run_id": self._run_id,
            "rank": None,
            "hardware": [
                h | {"host": i["host"], "rank": i["rank"]} for i in infos for h in i["hardware"]
            ],
            "missing": [
                m | {"host": i["host"], "rank": i["rank"]} for i in infos for m in i["missing"]
            ],
            "totals": totals_document(summary),
            "whole_run_energy_j": None,
            "distributed": {
                "role": "job",
                "world_size": self._world_size,
                "hosts": sorted({i["host"] for i in infos}),
                "ranks": [
                    {k: v for k, v in i.items() if k not in ("hardware", "missing")} for i in infos
                ],
                "incomplete_epochs": {str(e): ranks for e, ranks in self._incomplete.items()},
            },
        }
