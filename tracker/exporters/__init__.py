"""Exporters: a run's figures in the tools users already watch, each an optional extra.

``Tracker(..., exporters=[Prometheus(), MLflow()])``. Each exporter imports its library when it
is made (an ``ImportError`` names the extra to install); ``import tracker`` imports none of them.
``Exporter`` is the protocol they share (``tracker.exporters.base``): subclass it for a sink of
your own.
"""

from tracker.exporters.base import Exporter, RunInfo
from tracker.exporters.mlflow import MLflow
from tracker.exporters.opentelemetry import OpenTelemetry
from tracker.exporters.prometheus import Prometheus
from tracker.exporters.tensorboard import TensorBoard
from tracker.exporters.wandb import WandB

__all__ = ["Exporter", "MLflow", "OpenTelemetry", "Prometheus", "RunInfo", "TensorBoard", "WandB"]
