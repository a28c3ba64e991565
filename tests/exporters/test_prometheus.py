"""``Prometheus``: /metrics scraped over loopback, and pushes to a Pushgateway stand-in."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.exporters.runs import POWER_W, make_tracker, run_epochs
from tracker.exporters import Prometheus

DEVICE_LABELS = {"project", "run_id", "host", "rank", "device", "component", "method"}


def scrape(exporter: Prometheus) -> dict[str, dict[str, float]]:
    """GET the exporter's /metrics on loopback: each wattprint sample's value by name and device."""
    return parse(get(exporter))


def get(exporter: Prometheus) -> str:
    """The exporter's /metrics page, as text."""
    assert exporter.port is not None
    url = f"http://127.0.0.1:{exporter.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def parse(text: str) -> dict[str, dict[str, float]]:
    """Exposition text parsed by prometheus_client: {sample name: {device or "": value}}."""
    values: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("wattprint_") and not sample.name.endswith("_created"):
                device = sample.labels.get("device", "")
                values.setdefault(sample.name, {})[device] = sample.value
    return values


def test_scraped_totals_equal_the_runs_figures_while_it_lives(tmp_path: Path) -> None:
    exporter = Prometheus(port=0)
    with make_tracker(tmp_path, [exporter]) as tracker:
        run_epochs(tracker, 3)
        scraped = scrape(exporter)
        summary = tracker.summary
        last = tracker.epochs[-1]
    energy = scraped["wattprint_energy_joules_total"]
    assert set(energy) == set(POWER_W)
    assert sum(energy.values()) == pytest.approx(summary.it_energy_j, rel=1e-9)
    assert sum(scraped["wattprint_emissions_grams_total"].values()) == pytest.approx(
        summary.co2_g, rel=1e-9
    )
    assert scraped["wattprint_epochs_total"] == {"": 3.0}
    by_device = {d.device: d for d in last.devices}
    assert energy["gpu0"] > (by_device["gpu0"].energy_j or 0)  # the epochs' total, not the last
    assert scraped["wattprint_power_watts"] == pytest.approx(POWER_W, rel=1e-6)


def test_labels_name_the_run_and_each_device(tmp_path: Path) -> None:
    exporter = Prometheus(port=0)
    with make_tracker(tmp_path, [exporter], run_id="labelled") as tracker:
        run_epochs(tracker, 1)
        families = list(text_string_to_metric_families(get(exporter)))
    energy = [f for f in families if f.name == "wattprint_energy_joules"]
    samples = {s.labels["device"]: s for f in energy for s in f.samples}
    assert set(samples["cpu0"].labels) == DEVICE_LABELS
    assert samples["cpu0"].labels | {"host": "h"} == {
        "project": "exported", "run_id": "labelled", "host": "h", "rank": "0",
        "device": "cpu0", "component": "cpu", "method": "power",
    }  # fmt: skip


def test_power_gauge_is_live_before_any_epoch_closes(tmp_path: Path) -> None:
    exporter = Prometheus(port=0)
    with make_tracker(tmp_path, [exporter]) as tracker:
        tracker.epoch_start()
        deadline = time.monotonic() + 10
        power: dict[str, float] = {}
        while len(power) < len(POWER_W) and time.monotonic() < deadline:
            time.sleep(0.05)
            power = scrape(exporter).get("wattprint_power_watts", {})
        assert power == pytest.approx(POWER_W, rel=1e-6)
        assert scrape(exporter)["wattprint_epochs_total"] == {"": 0.0}
        tracker.epoch_end()


def test_the_server_stops_with_the_run_and_serves_the_next_one(tmp_path: Path) -> None:
    exporter = Prometheus(port=0)
    with make_tracker(tmp_path, [exporter], run_id="first") as tracker:
        run_epochs(tracker, 1)
        first_port = exporter.port
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{first_port}/metrics", timeout=2)
    with make_tracker(tmp_path, [exporter], run_id="second") as tracker:
        run_epochs(tracker, 1)
        assert scrape(exporter)["wattprint_epochs_total"] == {"": 1.0}  # a fresh registry


class Gateway:
    """A Pushgateway stand-in on loopback: records every push's method, path and body."""

    def __init__(self, status: int = 200) -> None:
        self.pushes: list[tuple[str, str, str]] = []
        self.status = status
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_PUT(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length).decode()
                gateway.pushes.append((self.command, self.path, body))
                self.send_response(gateway.status)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


@pytest.fixture
def gateway() -> Iterator[Gateway]:
    stand_in = Gateway()
    yield stand_in
    stand_in.close()


def test_pushes_reach_the_gateway_and_the_last_holds_the_runs_totals(
    tmp_path: Path, gateway: Gateway
) -> None:
    exporter = Prometheus(pushgateway=gateway.url, job="training")
    with make_tracker(tmp_path, [exporter], run_id="pushed") as tracker:
        run_epochs(tracker, 2)
    summary = tracker.summary
    assert gateway.pushes, "nothing was pushed"
    method, path, body = gateway.pushes[-1]
    assert method == "PUT"
    assert path == "/metrics/job/training/rank/0/run_id/pushed"
    pushed = parse(body)
    assert sum(pushed["wattprint_energy_joules_total"].values()) == pytest.approx(
        summary.it_energy_j, rel=1e-9
    )
    assert sum(pushed["wattprint_emissions_grams_total"].values()) == pytest.approx(
        summary.co2_g, rel=1e-9
    )
    assert pushed["wattprint_epochs_total"] == {"": 2.0}
    assert summary.warnings == ()


def test_a_gateway_that_refuses_pushes_is_warned_about_once_and_the_run_goes_on(
    tmp_path: Path,
) -> None:
    refusing = Gateway(status=500)
    try:
        exporter = Prometheus(pushgateway=refusing.url)
        with make_tracker(tmp_path, [exporter]) as tracker:
            run_epochs(tracker, 3)
    finally:
        refusing.close()
    assert len(tracker.epochs) == 3 and tracker.summary.it_energy_j is not None
    (warning,) = [w for w in tracker.summary.warnings if "Prometheus" in w]
    assert "500" in warning
    assert len(refusing.pushes) >= 2  # kept after its first failure: the final push was tried


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"port": -1}, "port"),
        ({"port": 70000}, "port"),
        ({"port": True}, "port"),
        ({"port": "9101"}, "port"),
        ({"addr": ""}, "addr"),
        ({"addr": None}, "addr"),
        ({"pushgateway": ""}, "pushgateway"),
        ({"pushgateway": "gw:9091", "port": 9101}, "not both"),
        ({"pushgateway": "gw:9091", "job": ""}, "job"),
        ({"pushgateway": "gw:9091", "job": 7}, "job"),
    ],
)
def test_bad_arguments_are_refused_when_made(kwargs: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Prometheus(**kwargs)  # type: ignore[arg-type]


def test_a_port_in_use_is_warned_about_and_the_run_goes_on(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        exporter = Prometheus(port=taken.getsockname()[1])
        with make_tracker(tmp_path, [exporter]) as tracker:
            run_epochs(tracker, 2)
    assert len(tracker.epochs) == 2 and tracker.summary.it_energy_j is not None
    (warning,) = tracker.summary.warnings
    assert "exporter Prometheus (start) failed" in warning and "left out" in warning
