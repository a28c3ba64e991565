"""``OpenTelemetry``: the instruments read back through the SDK's in-memory reader."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from tests.exporters.runs import POWER_W, make_tracker, run_epochs
from tracker.exporters import OpenTelemetry


def collected(reader: InMemoryMetricReader) -> dict[str, dict[str, Any]]:
    """{instrument: {device or "": (value, unit, attributes)}} from one collection."""
    data = reader.get_metrics_data()
    found: dict[str, dict[str, Any]] = {}
    if data is None:  # nothing recorded yet
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "wattprint"
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    assert isinstance(point, NumberDataPoint)
                    device = str(point.attributes.get("device", "")) if point.attributes else ""
                    entry = (point.value, metric.unit, dict(point.attributes or {}))
                    found.setdefault(metric.name, {})[device] = entry
    return found


def test_instruments_add_up_to_the_runs_figures_with_units_and_attributes(
    tmp_path: Path,
) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with make_tracker(tmp_path, [OpenTelemetry(meter_provider=provider)], run_id="otel") as t:
        run_epochs(t, 3)
        live = collected(reader)
    summary = t.summary
    energy = live["wattprint.energy"]
    assert sum(v for v, _, _ in energy.values()) == pytest.approx(summary.it_energy_j, rel=1e-9)
    emissions = live["wattprint.emissions"]
    assert sum(v for v, _, _ in emissions.values()) == pytest.approx(summary.co2_g, rel=1e-9)
    assert {device: unit for device, (_, unit, _) in energy.items()} == dict.fromkeys(POWER_W, "J")
    assert {unit for _, unit, _ in emissions.values()} == {"g"}
    assert live["wattprint.epochs"][""][0] == 3
    power = live["wattprint.power"]
    assert {d: v for d, (v, _, _) in power.items()} == pytest.approx(POWER_W, rel=1e-6)
    assert power["gpu1"][1] == "W"
    assert power["gpu1"][2] == {
        "project": "exported", "run_id": "otel", "host": t._host, "rank": "0",
        "device": "gpu1", "component": "gpu", "method": "power",
    }  # fmt: skip
    assert "wattprint.power" not in collected(reader)  # stopped: no power observed
    provider.shutdown()


def test_the_global_provider_is_used_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry import metrics

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    monkeypatch.setattr(metrics, "get_meter_provider", lambda: provider)
    exporter = OpenTelemetry()  # made before the provider is looked up: it is, at start
    with make_tracker(tmp_path, [exporter]) as t:
        run_epochs(t, 1)
    assert collected(reader)["wattprint.epochs"][""][0] == 1
    provider.shutdown()


def test_a_provider_that_is_not_one_is_refused_when_made() -> None:
    with pytest.raises(ValueError, match="meter_provider"):
        OpenTelemetry(meter_provider="localhost:4317")  # type: ignore[arg-type]


def test_power_is_observed_before_any_epoch_closes(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    with make_tracker(tmp_path, [OpenTelemetry(provider)]) as t:
        t.epoch_start()
        deadline = time.monotonic() + 10
        power: dict[str, Any] = {}
        while len(power) < len(POWER_W) and time.monotonic() < deadline:
            time.sleep(0.05)
            power = collected(reader).get("wattprint.power", {})
        t.epoch_end()
    assert {d: v for d, (v, _, _) in power.items()} == pytest.approx(POWER_W, rel=1e-6)
    provider.shutdown()
