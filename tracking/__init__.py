"""Experiment tracking: the `ExperimentLogger` interface and the no-op logger (base.py), one file per backend
(csv_logger.py, wandb_logger.py, tensorboard_logger.py, mlflow_logger.py), the fan-out (multi.py), the failure guard
(guard.py), backend choice and main-process gating (factory.py), the kit for self-contained HTML pages (page.py) and
what every writer of a run's files shares (files.py, secrets.py). Receives numbers, tables, figures and files; knows
no training, model, data, metric or flag. The bottom layer: every other package may import it.

Names are imported on first use, and the W&B, TensorBoard and MLflow backends import their libraries only when a run
asks for them."""
import importlib

_HOMES = {"ExperimentLogger": "tracking.base", "NoOpLogger": "tracking.base", "CSVLogger": "tracking.csv_logger",
          "MultiLogger": "tracking.multi", "BACKENDS": "tracking.factory", "build_logger": "tracking.factory",
          "parse_logger_names": "tracking.factory"}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'tracking' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
