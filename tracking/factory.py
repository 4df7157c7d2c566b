"""Builds the logger a run asked for. The one place that knows about processes: only the main process gets real
backends; every other process gets a `NoOpLogger`, so backends hold no rank logic. Each backend is wrapped in a
`GuardedLogger`, so a backend that fails is switched off and the others and training go on."""
from __future__ import annotations

import logging
from typing import Callable, Sequence

from tracking.base import ExperimentLogger, NoOpLogger
from tracking.csv_logger import CSVLogger
from tracking.files import first_line
from tracking.guard import GuardedLogger
from tracking.multi import MultiLogger


def _csv(run_dir: str, **_options) -> ExperimentLogger:
    return CSVLogger(run_dir)


def _none(run_dir: str, **_options) -> ExperimentLogger:
    return NoOpLogger()


def _wandb(run_dir: str, **options) -> ExperimentLogger:
    from tracking.wandb_logger import WandbLogger  # wandb is imported only when asked for

    known = ("project", "entity", "mode", "run_name", "group", "tags")
    return WandbLogger(run_dir, **{k: v for k, v in options.items() if k in known and v is not None})


def _tensorboard(run_dir: str, **_options) -> ExperimentLogger:
    from tracking.tensorboard_logger import TensorBoardLogger

    return TensorBoardLogger(run_dir)


def _mlflow(run_dir: str, **options) -> ExperimentLogger:
    from tracking.mlflow_logger import MlflowLogger  # mlflow is imported only when asked for

    named = {"mlflow_experiment": "experiment", "run_name": "run_name", "group": "group"}
    return MlflowLogger(run_dir, **{named[k]: v for k, v in options.items() if k in named and v is not None})


BACKENDS: dict[str, Callable[..., ExperimentLogger]] = {"csv": _csv, "mlflow": _mlflow, "none": _none,
                                                        "tensorboard": _tensorboard, "wandb": _wandb}


def parse_logger_names(spec: str | Sequence[str]) -> list[str]:
    """`"csv,wandb"` -> `["csv", "wandb"]`; raises ValueError naming an unknown backend and the known ones."""
    names = [n.strip().lower() for n in (spec.split(",") if isinstance(spec, str) else spec) if n.strip()]
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise ValueError(
            f"unknown logger {','.join(unknown) or repr(spec)}: choose from {', '.join(sorted(BACKENDS))} "
            "(a comma-separated list for several)"
        )
    return list(dict.fromkeys(names))


def build_logger(spec: str | Sequence[str], run_dir: str, is_main_process: bool = True, timeout: float = 60.0,
                 public_keys: Sequence[str] = (), **options) -> ExperimentLogger:
    """`options` go to the backends that take them (the W&B backend: project, entity, mode, run_name, group,
    tags; the MLflow backend: mlflow_experiment, run_name, group). `timeout`: seconds a backend
    may take over one call before it is switched off. `public_keys`: hyperparameters never redacted as secrets."""
    names = parse_logger_names(spec)
    if not is_main_process:
        return NoOpLogger()
    loggers = []
    for name in names:
        if name == "none":
            continue
        try:
            loggers.append(GuardedLogger(BACKENDS[name](run_dir, **options), timeout, tuple(public_keys)))
        except Exception as exc:  # a tracker that cannot start must not stop the run
            logging.getLogger(__name__).warning("tracking: the %s logger could not start (%s); going on without it",
                                                name, first_line(exc, with_type=True))
    if not loggers:
        return NoOpLogger()
    return loggers[0] if len(loggers) == 1 else MultiLogger(loggers)
