"""``OpenTelemetry``: a run's figures through the OpenTelemetry metrics API.

    from tracker.exporters import OpenTelemetry
    Tracker(exporters=[OpenTelemetry()])  # the global MeterProvider, or meter_provider=...

Instruments (meter ``wattprint``), with the attributes ``project, run_id, host, rank, device,
component, method`` that ``tracker.exporters.prometheus`` uses as labels:

- ``wattprint.energy`` (counter, J): IT energy per device, added at each epoch's end;
- ``wattprint.emissions`` (counter, g): gCO2e per device (after PUE);
- ``wattprint.power`` (observable gauge, W): each device's latest interval average, observed
  whenever the provider's reader collects, and nothing once the run has stopped;
- ``wattprint.epochs`` (counter): epochs closed, with the run's attributes only.

Where the figures go (OTLP, Prometheus, the console) is the provider's readers' business.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

from tracker.exporters.base import Exporter, RunInfo, require
from tracker.records import EpochRecord, RunSummary
from tracker.version import VERSION

if TYPE_CHECKING:
    from opentelemetry.metrics import CallbackOptions, Counter, MeterProvider, Observation


class OpenTelemetry(Exporter):
    """Records the run's instruments with ``meter_provider`` (None: the global one, at start).

    Needs ``wattprint[otel]`` (the API; the SDK or a vendor's distribution provides the provider).
    """

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        require("opentelemetry.metrics", "otel", "OpenTelemetry")
        from opentelemetry.metrics import MeterProvider

        if meter_provider is not None and not isinstance(meter_provider, MeterProvider):
            raise ValueError(
                "OpenTelemetry: meter_provider must be an opentelemetry.metrics.MeterProvider "
                f"or None (the global one), got {meter_provider!r}"
            )
        self._provider = meter_provider
        self._instruments: tuple[MeterProvider, Counter, Counter, Counter] | None = None
        self._attributes: dict[str, dict[str, str]] = {}
        self._run_attributes: dict[str, str] = {}
        self._power_w: dict[str, float] = {}

    def start(self, run: RunInfo) -> None:
        """Create the instruments (once per provider) and take the run's attributes."""
        from opentelemetry import metrics

        provider = self._provider or metrics.get_meter_provider()
        if self._instruments is None or self._instruments[0] is not provider:
            meter = provider.get_meter("wattprint", VERSION)
            energy = meter.create_counter("wattprint.energy", "J", "IT energy per device")
            emissions = meter.create_counter("wattprint.emissions", "g", "gCO2e per device")
            epochs = meter.create_counter("wattprint.epochs", "{epoch}", "Epochs closed")
            meter.create_observable_gauge(
                "wattprint.power", [self._observe], "W", "Average power, latest interval"
            )
            self._instruments = (provider, energy, emissions, epochs)
        self._attributes = {d.device: run.labels(d) for d in run.devices}
        self._run_attributes = run.run_labels()
        self._power_w = {}

    def interval(self, power_w: Mapping[str, float]) -> None:
        """Keep each device's latest power for the gauge's next observation."""
        self._power_w = {**self._power_w, **power_w}

    def epoch(self, record: EpochRecord) -> None:
        """Add the epoch's energy and emissions per device, and one epoch."""
        if self._instruments is None:
            return
        _, energy, emissions, epochs = self._instruments
        for d in record.devices:
            attributes = self._attributes.get(d.device)
            if attributes is None:
                continue
            if d.energy_j is not None:
                energy.add(max(d.energy_j, 0.0), attributes)
            if d.co2_g is not None:
                emissions.add(max(d.co2_g, 0.0), attributes)
        epochs.add(1, self._run_attributes)

    def stop(self, summary: RunSummary) -> None:
        """Stop observing power (the counters keep their totals in the provider)."""
        self._attributes, self._power_w = {}, {}

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        from opentelemetry.metrics import Observation

        attributes, power_w = self._attributes, self._power_w
        return [Observation(w, attributes[d]) for d, w in power_w.items() if d in attributes]
