"""Keeps a failing backend from taking training down: the first exception is reported once with the backend's
name, the backend is switched off for the rest of the run, and `finalize` says what was not logged."""
from __future__ import annotations

import logging
from typing import Any

from tracking.base import ExperimentLogger

log = logging.getLogger(__name__)


class GuardedLogger(ExperimentLogger):
    def __init__(self, backend: ExperimentLogger) -> None:
        self.backend = backend
        self.name = backend.name
        self.failure: str | None = None
        self.lost_calls = 0

    @property
    def experiment(self) -> Any:
        return self.backend.experiment

    @property
    def log_dir(self) -> str | None:
        return self.backend.log_dir

    def _guard(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self.failure is not None:
            self.lost_calls += 1
            return
        try:
            getattr(self.backend, method)(*args, **kwargs)
        except Exception as exc:
            self.failure = f"{method}: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
            self.lost_calls += 1
            log.warning("tracking: the %s logger failed in %s; it is off for the rest of the run, training goes on",
                        self.name, self.failure)

    def log_hyperparams(self, params):
        self._guard("log_hyperparams", params)

    def log_metrics(self, metrics, step):
        self._guard("log_metrics", metrics, step)

    def log_table(self, key, dataframe, step):
        self._guard("log_table", key, dataframe, step)

    def log_image(self, key, image, step):
        self._guard("log_image", key, image, step)

    def log_confusion_matrix(self, key, y_true, y_pred, class_names, step, probs=None):
        self._guard("log_confusion_matrix", key, y_true, y_pred, class_names, step, probs=probs)

    def log_roc_curve(self, key, y_true, probs, class_names, step):
        self._guard("log_roc_curve", key, y_true, probs, class_names, step)

    def log_pr_curve(self, key, y_true, probs, class_names, step):
        self._guard("log_pr_curve", key, y_true, probs, class_names, step)

    def log_summary(self, values):
        self._guard("log_summary", values)

    def log_artifact(self, path, name, type="model", aliases=()):
        self._guard("log_artifact", path, name, type=type, aliases=aliases)

    def finalize(self, status="success"):
        if self.failure is None:
            self._guard("finalize", status)
        if self.failure is not None:
            try:  # still try to close what the backend opened
                self.backend.finalize("failed")
            except Exception:
                pass
            log.warning("tracking: the %s logger was switched off after %s; %d logging calls were lost",
                        self.name, self.failure, self.lost_calls)
