"""``MLflow``: each epoch's figures as MLflow metrics at ``step`` = epoch; the run's files too.

    import mlflow
    from tracker.exporters import MLflow
    with mlflow.start_run(), Tracker(location="DE", exporters=[MLflow()]) as tracker: ...

Metrics are named as the framework callbacks name them (``wattprint/co2_g``,
``wattprint/it_energy_j``, ``wattprint/gpu_energy_j``, ...: ``tracker.exporters.base.FIGURES``);
at stop the totals follow as ``wattprint/total_co2_g``, ... Tags ``wattprint.location``,
``wattprint.intensity_source``, ``wattprint.pue``, ``wattprint.methods`` (and the run's id,
directory and devices) describe how the figures were made; tags rather than params, so two
trackers in one MLflow run never clash over a value. The run goes to the active MLflow run, or to
one this exporter starts (named after the wattprint run) and ends at stop. Epochs are logged
asynchronously, so a remote tracking server never holds up training; stop waits for them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tracker.exporters.base import Exporter, RunInfo, epoch_metrics, require, summary_metrics
from tracker.records import EpochRecord, RunSummary

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.utils.async_logging.run_operations import RunOperations


class MLflow(Exporter):
    """Logs to the active MLflow run (or one it starts and ends); ``artifacts``: the run's files.

    The tracking server is MLflow's own setting (``mlflow.set_tracking_uri`` or env
    ``MLFLOW_TRACKING_URI``). Needs ``wattprint[mlflow]``.
    """

    def __init__(self, *, artifacts: bool = True) -> None:
        if not isinstance(artifacts, bool):
            raise ValueError(f"MLflow: artifacts must be True or False, got {artifacts!r}")
        require("mlflow", "mlflow", "MLflow")
        self.artifacts = artifacts
        self._client: MlflowClient | None = None
        self._run: RunInfo | None = None
        self._mlflow_run_id = ""
        self._own = False
        self._pending: list[RunOperations] = []

    @property
    def mlflow_run_id(self) -> str:
        """The MLflow run logged to (empty before ``start``)."""
        return self._mlflow_run_id

    def start(self, run: RunInfo) -> None:
        """Find or start the MLflow run and tag it with how the figures are made."""
        import mlflow
        from mlflow import MlflowClient
        from mlflow.entities import RunTag

        active = mlflow.active_run()
        self._own = active is None
        if active is None:
            active = mlflow.start_run(run_name=run.run_id)
        self._mlflow_run_id, self._pending = active.info.run_id, []
        client = MlflowClient()
        tags = {
            "wattprint.run_id": run.run_id,
            "wattprint.run_dir": str(run.run_dir),
            "wattprint.location": run.location or "",
            "wattprint.intensity_source": run.intensity_source,
            "wattprint.pue": f"{run.pue:g}",
            "wattprint.devices": ", ".join(f"{d.device}={d.method}" for d in run.devices),
        }
        try:
            client.log_batch(self._mlflow_run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        except BaseException:
            if self._own:  # no run of ours is left open
                self._end(client)
            raise
        self._client, self._run = client, run

    def epoch(self, record: EpochRecord) -> None:
        """Log the epoch's figures at ``step=record.epoch`` (asynchronously)."""
        if self._client is None:
            return
        from mlflow.entities import Metric

        now_ms = int(time.time() * 1000)
        metrics = [Metric(k, v, now_ms, record.epoch) for k, v in epoch_metrics(record).items()]
        operation = self._client.log_batch(self._mlflow_run_id, metrics=metrics, synchronous=False)
        if operation is not None:
            self._pending.append(operation)

    def stop(self, summary: RunSummary) -> None:
        """Wait for the epochs; log totals, methods and the run's files; end a run it started."""
        client, run, pending = self._client, self._run, self._pending
        self._client, self._run, self._pending = None, None, []
        if client is None or run is None:
            return
        from mlflow.entities import Metric, RunTag

        try:
            for operation in pending:
                operation.wait()  # type: ignore[no-untyped-call]  # untyped upstream
            now_ms = int(time.time() * 1000)
            figures = summary_metrics(summary).items()
            totals = [Metric(k, v, now_ms, summary.epochs) for k, v in figures]
            tags = [RunTag("wattprint.methods", summary.methods)]
            client.log_batch(self._mlflow_run_id, metrics=totals, tags=tags)
            if self.artifacts and run.run_dir.is_dir():
                client.log_artifacts(self._mlflow_run_id, str(run.run_dir), "wattprint")
        finally:
            if self._own:
                self._end(client)

    def _end(self, client: MlflowClient) -> None:
        """End the run this exporter started (the active run, where it still is)."""
        import mlflow

        active = mlflow.active_run()
        if active is not None and active.info.run_id == self._mlflow_run_id:
            mlflow.end_run()
        else:  # stopped from another thread (a signal, the interpreter's exit)
            client.set_terminated(self._mlflow_run_id)
