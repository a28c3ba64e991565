"""``WandB``: each epoch's figures in a Weights & Biases run, the totals in its summary.

    import wandb
    from tracker.exporters import WandB
    wandb.init(project="resnet")
    with Tracker(location="DE", exporters=[WandB()]) as tracker: ...

Each epoch is one ``run.log`` of the figures the framework callbacks log (``wattprint/co2_g``,
``wattprint/it_energy_j``, ...) with ``wattprint/epoch``, the step those charts are drawn
against (``define_metric``), so they never disturb the run's own step. At stop the summary gets
the totals (``wattprint/total_co2_g``, ...) and the config how they were made (``wattprint``:
location, intensity source, PUE, methods). The run is the active one, or one this exporter starts
(in the wattprint project's name) and finishes at stop. ``WANDB_MODE=offline`` works as usual.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tracker.exporters.base import Exporter, RunInfo, epoch_metrics, require, summary_metrics
from tracker.records import EpochRecord, RunSummary

if TYPE_CHECKING:
    from wandb.sdk.wandb_run import Run

STEP = "wattprint/epoch"


class WandB(Exporter):
    """Logs to the active W&B run (or one it starts and finishes). Needs ``wattprint[wandb]``."""

    def __init__(self) -> None:
        require("wandb", "wandb", "WandB")
        self._run: Run | None = None
        self._own = False
        self._config: dict[str, Any] = {}

    def start(self, run: RunInfo) -> None:
        """Find or start the W&B run; draw wattprint's charts against ``wattprint/epoch``."""
        import wandb

        active = wandb.run
        self._own = active is None
        if active is None:
            active = wandb.init(project=run.project, name=run.run_id)
        self._config = {
            "run_id": run.run_id,
            "run_dir": str(run.run_dir),
            "location": run.location,
            "intensity_source": run.intensity_source,
            "pue": run.pue,
            "devices": {d.device: d.method for d in run.devices},
        }
        try:
            active.define_metric(STEP)
            active.define_metric("wattprint/*", step_metric=STEP)
            active.config.update({"wattprint": self._config}, allow_val_change=True)  # type: ignore[no-untyped-call]  # untyped upstream
        except BaseException:
            if self._own:  # no run of ours is left open
                active.finish()
            raise
        self._run = active

    def epoch(self, record: EpochRecord) -> None:
        """Log the epoch's figures, at ``wattprint/epoch`` = the epoch's number."""
        if self._run is not None:
            self._run.log({STEP: record.epoch, **epoch_metrics(record)})

    def stop(self, summary: RunSummary) -> None:
        """Totals to the run's summary, methods to its config; finish the run if it began it."""
        run, self._run = self._run, None
        if run is None:
            return
        try:
            run.summary.update(summary_metrics(summary))
            config = {**self._config, "methods": summary.methods}
            run.config.update({"wattprint": config}, allow_val_change=True)  # type: ignore[no-untyped-call]  # untyped upstream
        finally:
            if self._own:
                run.finish()
