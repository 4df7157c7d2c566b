"""Keeps a failing or hanging backend from taking training down, and keeps backend I/O off the training loop.

Each backend gets its own worker thread: the loop only queues calls. The first exception, or a call that has not
returned after `timeout` seconds, is reported once with the backend's name; the backend is then switched off for
the rest of the run while training and the other backends go on, and `finalize` says how many calls were lost.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from tracking.base import ExperimentLogger, ForwardingLogger

log = logging.getLogger(__name__)


class GuardedLogger(ForwardingLogger):
    def __init__(self, backend: ExperimentLogger, timeout: float = 60.0) -> None:
        self.backend, self.name, self.timeout = backend, backend.name, timeout
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
            if item is None:
                return
            method, args, kwargs = item
            if self.failure is None:
                self._busy = (method, time.monotonic())
                try:
                    getattr(self.backend, method)(*args, **kwargs)
                except Exception as exc:
                    self._fail(method, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}")
                finally:
                    self._busy = None
            else:
                self.lost_calls += 1
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
