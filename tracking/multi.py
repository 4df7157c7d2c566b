"""Fan-out: one logger that forwards every call to several backends (`--logger csv,wandb`)."""
from __future__ import annotations

from typing import Sequence

from tracking.base import ExperimentLogger, ForwardingLogger


class MultiLogger(ForwardingLogger):
    name = "multi"

    def __init__(self, loggers: Sequence[ExperimentLogger]) -> None:
        self.loggers = list(loggers)

    @property
    def experiment(self) -> list:
        return [logger.experiment for logger in self.loggers]

    @property
    def log_dir(self) -> str | None:
        return next((logger.log_dir for logger in self.loggers if logger.log_dir), None)

    def _forward(self, method: str, *args, **kwargs) -> None:
        for logger in self.loggers:
            getattr(logger, method)(*args, **kwargs)

    def backends(self) -> list[ExperimentLogger]:
        return [backend for logger in self.loggers for backend in logger.backends()]
