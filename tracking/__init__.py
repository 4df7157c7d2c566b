"""Experiment tracking: the `ExperimentLogger` interface and its backends (csv, none, wandb, fan-out).

The W&B backend lives in `tracking.wandb_logger` and imports wandb only when a run asks for it."""
from tracking.base import ExperimentLogger, NoOpLogger
from tracking.csv_logger import CSVLogger
from tracking.factory import BACKENDS, build_logger, parse_logger_names
from tracking.multi import MultiLogger

__all__ = ["ExperimentLogger", "NoOpLogger", "CSVLogger", "MultiLogger", "BACKENDS", "build_logger", "parse_logger_names"]
