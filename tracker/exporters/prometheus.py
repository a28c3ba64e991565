"""``Prometheus``: a run's figures as Prometheus metrics, scraped from ``/metrics`` or pushed.

    from tracker import Tracker
    from tracker.exporters import Prometheus
    with Tracker(exporters=[Prometheus(port=9101)]) as tracker: ...

Metrics, each labelled ``project, run_id, host, rank, device, component, method`` (the meter's
method) except the epoch count, which has the run's labels only:

- ``wattprint_energy_joules_total``: IT energy per device (before PUE), J, counted at each
  epoch's end, so the devices add up to the run's ``it_energy_j``;
- ``wattprint_emissions_grams_total``: each device's gCO2e (after PUE), adding up to ``co2_g``;
- ``wattprint_power_watts``: each device's average power over its latest ``samples.csv``
  interval, updated live between epochs;
- ``wattprint_epochs_total``: epochs closed.

Each exporter has a registry of its own (never ``prometheus_client``'s global one). Serving binds
``addr`` (loopback by default: binding beyond it is the user's choice) while the run lives;
``pushgateway`` instead pushes to a Pushgateway (batch jobs) from a worker thread after each epoch,
and once more at stop, grouped by job, run id and rank.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Mapping
from typing import TYPE_CHECKING

from tracker.exporters.base import LABELS, Exporter, RunInfo, require
from tracker.records import EpochRecord, RunSummary

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry, Counter, Gauge

DEFAULT_PORT = 9101
PUSH_TIMEOUT_S = 10.0  # the last push, at stop, waits at most this long for the gateway


class Prometheus(Exporter):
    """Serves ``/metrics`` on ``addr:port`` (9101) while the run lives, or pushes to a gateway.

    ``port=0`` picks a free port (``.port`` says which once started). ``pushgateway`` is the
    gateway's ``host:port`` or URL, and ``job`` its job label. Needs ``wattprint[prometheus]``.
    """

    def __init__(
        self,
        port: int | None = None,
        addr: str = "127.0.0.1",
        *,
        pushgateway: str | None = None,
        job: str = "wattprint",
    ) -> None:
        if pushgateway is not None and port is not None:
            raise ValueError(
                "Prometheus: give port (serve /metrics) or pushgateway (push to it), not both"
            )
        if port is not None and (
            isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535
        ):
            raise ValueError(f"Prometheus: port must be an int from 0 to 65535, got {port!r}")
        if not isinstance(addr, str) or not addr.strip() or addr != addr.strip():
            raise ValueError(f"Prometheus: addr must be a host name or IP address, got {addr!r}")
        if pushgateway is not None and not _is_gateway(pushgateway):
            raise ValueError(
                "Prometheus: pushgateway must be a host:port or an http(s) URL with a port from "
                f"0 to 65535 (if any), got {pushgateway!r}"
            )
        if not isinstance(job, str) or not job.strip():
            raise ValueError(f"Prometheus: job must be a non-empty label value, got {job!r}")
        self.job = job
        require("prometheus_client", "prometheus", "Prometheus")
        self._port = DEFAULT_PORT if port is None and pushgateway is None else port
        self.port = self._port  # the port bound, once started (``port=0``: the one picked)
        self.addr = addr
        self.pushgateway = pushgateway
        self._metrics: _Metrics | None = None
        self._server: tuple[WSGIServer, threading.Thread] | None = None
        self._pusher: _Pusher | None = None

    def start(self, run: RunInfo) -> None:
        """Register the run's metrics in a registry of its own; serve it or start pushing it."""
        from prometheus_client import CollectorRegistry, start_http_server

        registry = CollectorRegistry()
        metrics = _Metrics(registry, run)
        if self.pushgateway is not None:
            grouping = {"run_id": run.run_id, "rank": str(run.rank)}
            self._pusher = _Pusher(self.pushgateway, self.job, registry, grouping)
        else:
            assert self._port is not None
            self._server = start_http_server(self._port, self.addr, registry=registry)
            self.port = self._server[0].server_port
        self._metrics = metrics

    def interval(self, power_w: Mapping[str, float]) -> None:
        """Set each device's power gauge."""
        if self._metrics is not None:
            self._metrics.power(power_w)

    def epoch(self, record: EpochRecord) -> None:
        """Count the epoch's energy and emissions per device; push them (on the worker thread)."""
        if self._metrics is not None:
            self._metrics.epoch(record)
        if self._pusher is not None:
            self._pusher.push_soon()

    def stop(self, summary: RunSummary) -> None:
        """Push the final figures (pushgateway) or stop serving; the registry goes with the run."""
        pusher, server = self._pusher, self._server
        self._metrics = self._pusher = self._server = None
        if server is not None:
            server[0].shutdown()
            server[0].server_close()
            server[1].join()
        if pusher is not None:
            pusher.close()


def _is_gateway(value: object) -> bool:
    """Whether ``value`` is a Pushgateway address ``push_to_gateway`` can reach.

    It takes ``host:port`` or an http(s) URL, and puts ``http://`` before anything else.
    """
    if not isinstance(value, str) or not value or value != value.strip():
        return False
    url = value if urllib.parse.urlsplit(value).scheme in ("http", "https") else f"http://{value}"
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError:
        return False
    return bool(parts.hostname)


class _Metrics:
    """The run's four metrics and each device's label values."""

    def __init__(self, registry: CollectorRegistry, run: RunInfo) -> None:
        from prometheus_client import Counter, Gauge

        names = list(LABELS)
        self.energy: Counter = Counter(
            "wattprint_energy_joules", "IT energy per device (before PUE), J", names,
            registry=registry,
        )  # fmt: skip
        self.emissions: Counter = Counter(
            "wattprint_emissions_grams", "Emissions per device (after PUE), gCO2e", names,
            registry=registry,
        )  # fmt: skip
        self.watts: Gauge = Gauge(
            "wattprint_power_watts", "Average power over the latest interval, W", names,
            registry=registry,
        )  # fmt: skip
        self.epochs: Counter = Counter(
            "wattprint_epochs", "Epochs closed", list(run.run_labels()), registry=registry
        )
        self.epochs.labels(**run.run_labels())
        self.labels = {d.device: run.labels(d) for d in run.devices}
        self.run_labels = run.run_labels()
        for labels in self.labels.values():  # every device's series exists from the start
            self.energy.labels(**labels)
            self.emissions.labels(**labels)

    def power(self, power_w: Mapping[str, float]) -> None:
        for device, watts in power_w.items():
            if device in self.labels:
                self.watts.labels(**self.labels[device]).set(watts)

    def epoch(self, record: EpochRecord) -> None:
        for d in record.devices:
            labels = self.labels.get(d.device)
            if labels is None:
                continue
            if d.energy_j is not None:
                self.energy.labels(**labels).inc(max(d.energy_j, 0.0))
            if d.co2_g is not None:
                self.emissions.labels(**labels).inc(max(d.co2_g, 0.0))
        self.epochs.labels(**self.run_labels).inc()


class _Pusher:
    """Pushes a registry to a Pushgateway from a daemon thread, so no epoch waits on the network.

    Pushes asked for while one is under way coalesce into one. A failed push is raised at the
    next ``push_soon`` (the tracker warns once); the last push, at ``close``, raises its own.
    """

    def __init__(
        self, gateway: str, job: str, registry: CollectorRegistry, grouping: dict[str, str]
    ) -> None:
        self._args = (gateway, job, registry, grouping)
        self._wanted = threading.Event()
        self._closing = threading.Event()
        self._error: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="wattprint-push", daemon=True)
        self._thread.start()

    def push_soon(self) -> None:
        """Push on the worker thread; raise the previous push's error, if it failed."""
        error, self._error = self._error, None
        self._wanted.set()
        if error is not None:
            raise error

    def close(self) -> None:
        """Stop the worker and push the final figures now (at most ``PUSH_TIMEOUT_S``)."""
        self._closing.set()
        self._wanted.set()
        self._thread.join()
        self._push()

    def _run(self) -> None:
        while True:
            self._wanted.wait()
            if self._closing.is_set():
                return
            self._wanted.clear()
            try:
                self._push()
            except Exception as error:  # raised on the caller's thread at the next epoch
                self._error = error

    def _push(self) -> None:
        from prometheus_client import push_to_gateway

        gateway, job, registry, grouping = self._args
        push_to_gateway(gateway, job, registry, grouping_key=grouping, timeout=PUSH_TIMEOUT_S)
