"""Fan-out: one logger that forwards every call to several backends (`--logger csv,wandb`)."""
from __future__ import annotations

from typing import Sequence

from tracking.base import ExperimentLogger


class MultiLogger(ExperimentLogger):
    name = "multi"

    def __init__(self, loggers: Sequence[ExperimentLogger]) -> None:
        self.loggers = list(loggers)

    @property
    def experiment(self) -> list:
        return [logger.experiment for logger in self.loggers]

    @property
    def log_dir(self) -> str | None:
        return next((logger.log_dir for logger in self.loggers if logger.log_dir), None)

    def _each(self, method: str, *args, **kwargs) -> None:
        for logger in self.loggers:
            getattr(logger, method)(*args, **kwargs)

    def log_hyperparams(self, params):
        self._each("log_hyperparams", params)

    def log_metrics(self, metrics, step):
        self._each("log_metrics", metrics, step)

    def log_table(self, key, dataframe, step):
        self._each("log_table", key, dataframe, step)

    def log_image(self, key, image, step):
        self._each("log_image", key, image, step)

    def log_confusion_matrix(self, key, y_true, y_pred, class_names, step, probs=None):
        self._each("log_confusion_matrix", key, y_true, y_pred, class_names, step, probs=probs)

    def log_roc_curve(self, key, y_true, probs, class_names, step):
        self._each("log_roc_curve", key, y_true, probs, class_names, step)

    def log_pr_curve(self, key, y_true, probs, class_names, step):
        self._each("log_pr_curve", key, y_true, probs, class_names, step)

    def log_summary(self, values):
        self._each("log_summary", values)

    def log_artifact(self, path, name, type="model", aliases=()):
        self._each("log_artifact", path, name, type=type, aliases=aliases)

    def finalize(self, status="success"):
        self._each("finalize", status)
