"""Keeps a failing or hanging backend from taking training down, and keeps backend I/O off the training loop.

Each backend gets its own worker thread: the loop only queues calls. The first exception, or a call that has not
returned after `timeout` seconds, is reported once with the backend's name; the backend is then switched off for
the rest of the run while training and the other backends go on, and `finalize` says how many calls were lost.

What every backend would otherwise do for itself happens here, once: secrets are scrubbed from hyperparameters
before they are queued, and a second `finalize` does nothing.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from tracking.base import ExperimentLogger, ForwardingLogger
from tracking.files import first_line
from tracking.secrets import scrub

log = logging.getLogger(__name__)
_NOT_LOGGING = ("finalize", "load_state_dict")  # calls that log nothing: never counted as lost


class GuardedLogger(ForwardingLogger):
    def __init__(self, backend: ExperimentLogger, timeout: float = 60.0, public_keys: tuple[str, ...] = ()) -> None:
        """`public_keys`: hyperparameters never redacted, whatever they look like (see `secrets.scrub`)."""
        self.backend, self.name, self.timeout, self.public_keys = backend, backend.name, timeout, tuple(public_keys)
        self.failure: str | None = None
        self.closed = False  # finalized: the worker has been told to stop, so a second finalize does nothing
        self.lost_calls = 0
        self._queue: queue.Queue = queue.Queue()
        self._busy: tuple[str, float] | None = None  # (method, start time) of the call under way
        self._worker = threading.Thread(target=self._work, name=f"logger-{self.name}", daemon=True)
        self._worker.start()

    @property
    def experiment(self) -> Any:
        return self.backend.experiment

    @property
    def log_dir(self) -> str | None:
        return self.backend.log_dir

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                method, args, kwargs = item
                if self.failure is not None:
                    self.lost_calls += method not in _NOT_LOGGING
                    continue
                self._busy = (method, time.monotonic())
                try:
                    getattr(self.backend, method)(*args, **kwargs)
                except Exception as exc:
                    self._fail(method, first_line(exc, with_type=True))
                finally:
                    self._busy = None
            finally:  # whatever happened, `flush` must see the call as done
                self._queue.task_done()

    def _fail(self, method: str, reason: str) -> None:
        if self.failure is None:
            self.failure = f"{method}: {reason}"
            self.lost_calls += 1
            log.warning("tracking: the %s logger failed in %s; it is off for the rest of the run, training goes on",
                        self.name, self.failure)

    def _check_hang(self) -> None:
        busy = self._busy
        if busy is not None and time.monotonic() - busy[1] > self.timeout:
            self._fail(busy[0], f"no answer after {self.timeout:.0f} s")

    def _forward(self, method: str, *args: Any, **kwargs: Any) -> None:
        self._check_hang()
        if self.failure is not None or self.closed:
            self.lost_calls += 1
            return
        self._queue.put((method, args, kwargs))

    def log_hyperparams(self, params):
        self._forward("log_hyperparams", scrub(dict(params), self.public_keys))

    def flush(self) -> None:
        """Wait until every queued call has run, at most `timeout` seconds without progress."""
        while self.failure is None and self._queue.unfinished_tasks:
            self._check_hang()
            time.sleep(0.005)

    def state_dict(self) -> dict:
        self.flush()
        return self.backend.state_dict() if self.failure is None else {}

    def load_state_dict(self, state: dict) -> None:
        self._forward("load_state_dict", state)
        self.flush()

    @property
    def hung(self) -> bool:
        """Whether the backend stopped answering: its thread may never return, nor its library's exit handlers."""
        return self.failure is not None and "no answer after" in self.failure

    def finalize(self, status="success"):
        """Finish the backend and end its thread; a second call does nothing."""
        if self.closed:
            return
        if self.failure is None:
            self._forward("finalize", status)
            self.flush()
        self.closed = True
        self._queue.put(None)
        if self.failure is not None:
            log.warning("tracking: the %s logger was switched off after %s; %d logging calls were lost",
                        self.name, self.failure, self.lost_calls)
