"""Keeps a failing backend from taking training down: the first exception is reported once with the backend's
name, the backend is switched off for the rest of the run, and `finalize` says what was not logged."""
from __future__ import annotations

import logging
from typing import Any

from tracking.base import ExperimentLogger, ForwardingLogger

log = logging.getLogger(__name__)


class GuardedLogger(ForwardingLogger):
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

    def _forward(self, method: str, *args: Any, **kwargs: Any) -> None:
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

    def state_dict(self) -> dict:
        return self.backend.state_dict() if self.failure is None else {}

    def load_state_dict(self, state: dict) -> None:
        self._forward("load_state_dict", state)

    def finalize(self, status="success"):
        if self.failure is None:
            self._forward("finalize", status)
        if self.failure is not None:
            try:  # still try to close what the backend opened
                self.backend.finalize("failed")
            except Exception:
                pass
            log.warning("tracking: the %s logger was switched off after %s; %d logging calls were lost",
                        self.name, self.failure, self.lost_calls)
