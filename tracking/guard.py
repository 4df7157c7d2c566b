"""Keeps a failing or hanging backend from taking training down, and keeps backend I/O off the training loop.

Each backend gets two worker threads; the loop only queues calls. The record lane runs every call to the backend, in
order (metrics, tables, summaries, images already drawn). The drawing lane turns figures into images first, apart,
so that a figure that takes long (a chart of a thousand classes) never holds up a metric, a table or the summary.

The first exception, or a call that has not returned after `timeout` seconds, is reported once with the backend's
name. A failure on the record lane switches the backend off for the rest of the run; one on the drawing lane only
its figures. Training and the other backends go on, and `finalize` says how many calls were lost.

What every backend would otherwise do for itself happens here, once: secrets are scrubbed from hyperparameters
before they are queued, and a second `finalize` does nothing.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable

from tracking.base import ExperimentLogger, ForwardingLogger
from tracking.files import first_line, image_to_pil
from tracking.secrets import scrub

log = logging.getLogger(__name__)
_NOT_LOGGING = ("finalize", "load_state_dict", "_stop")  # calls that log nothing: never counted as lost


class _Lane:
    """One worker thread running queued calls in order, watched for failures and hangs."""

    def __init__(self, name: str, run: Callable[[str, tuple, dict], None], on_failure, timeout: float) -> None:
        self.run, self.on_failure, self.timeout = run, on_failure, timeout
        self.failure: str | None = None
        self.lost = 0
        self.queue: queue.Queue = queue.Queue()
        self.busy: tuple[str, float] | None = None  # (method, start time) of the call under way
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        while True:
            method, args, kwargs = self.queue.get()
            try:
                if method == "_stop":
                    return
                if self.failure is not None:
                    self.lost += method not in _NOT_LOGGING
                    continue
                self.busy = (method, time.monotonic())
                try:
                    self.run(method, args, kwargs)
                except Exception as exc:
                    self.fail(method, first_line(exc, with_type=True))
                finally:
                    self.busy = None
            finally:  # whatever happened, `flush` must see the call as done
                self.queue.task_done()

    def fail(self, method: str, reason: str) -> None:
        if self.failure is None:
            self.failure = f"{method}: {reason}"
            self.lost += 1
            self.on_failure(self)

    def check_hang(self) -> None:
        busy = self.busy
        if busy is not None and time.monotonic() - busy[1] > self.timeout:
            self.fail(busy[0], f"no answer after {self.timeout:.0f} s")

    def put(self, method: str, *args: Any, **kwargs: Any) -> None:
        self.queue.put((method, args, kwargs))

    def flush(self) -> None:
        """Wait until every queued call has run, at most `timeout` seconds without progress."""
        while self.failure is None and self.queue.unfinished_tasks:
            self.check_hang()
            time.sleep(0.005)

    def close(self) -> None:
        """Count what is still queued as lost (a hung worker never runs it), and let the thread end."""
        while True:
            try:
                method, _, _ = self.queue.get_nowait()
            except queue.Empty:
                break
            self.lost += method not in _NOT_LOGGING
            self.queue.task_done()
        self.put("_stop")


class GuardedLogger(ForwardingLogger):
    def __init__(self, backend: ExperimentLogger, timeout: float = 60.0, public_keys: tuple[str, ...] = ()) -> None:
        """`public_keys`: hyperparameters never redacted, whatever they look like (see `secrets.scrub`)."""
        self.backend, self.name, self.timeout, self.public_keys = backend, backend.name, timeout, tuple(public_keys)
        self.closed = False  # finalized: the workers have been told to stop, so a second finalize does nothing
        self._record = _Lane(f"logger-{self.name}", self._call, self._switched_off, timeout)
        self._drawing = _Lane(f"logger-{self.name}-drawing", self._draw, self._switched_off, timeout)

    def _call(self, method: str, args: tuple, kwargs: dict) -> None:
        getattr(self.backend, method)(*args, **kwargs)

    def _draw(self, method: str, args: tuple, kwargs: dict) -> None:
        key, image, step = args
        self._record.put("log_pil_image", key, image_to_pil(image), step)

    def _switched_off(self, lane: _Lane) -> None:
        what = "it is off" if lane is self._record else "its figures are off (metrics and tables go on)"
        log.warning("tracking: the %s logger failed in %s; %s for the rest of the run, training goes on",
                    self.name, lane.failure, what)

    @property
    def failure(self) -> str | None:
        """Why the backend was switched off, None while it works (its figures may be off: `figures_failure`)."""
        return self._record.failure

    @property
    def figures_failure(self) -> str | None:
        return self._drawing.failure

    @property
    def lost_calls(self) -> int:
        return self._record.lost + self._drawing.lost

    @property
    def experiment(self) -> Any:
        return self.backend.experiment

    @property
    def log_dir(self) -> str | None:
        return self.backend.log_dir

    def _forward(self, method: str, *args: Any, **kwargs: Any) -> None:
        self._record.check_hang()
        self._drawing.check_hang()
        lane = self._drawing if method == "log_image" else self._record
        if self._record.failure is not None or lane.failure is not None or self.closed:
            lane.lost += 1
            return
        lane.put(method, *args, **kwargs)

    def log_hyperparams(self, params):
        self._forward("log_hyperparams", scrub(dict(params), self.public_keys))

    def flush(self) -> None:
        """Wait until every queued call has run (figures first: they queue their images on the record lane), at
        most `timeout` seconds without progress on each lane."""
        self._drawing.flush()
        self._record.flush()

    def state_dict(self) -> dict:
        self.flush()
        return self.backend.state_dict() if self.failure is None else {}

    def load_state_dict(self, state: dict) -> None:
        self._forward("load_state_dict", state)
        self.flush()

    @property
    def hung(self) -> bool:
        """Whether the backend stopped answering: its threads may never return, nor its library's exit handlers."""
        return any(f is not None and "no answer after" in f for f in (self._record.failure, self._drawing.failure))

    def finalize(self, status="success"):
        """Finish the backend and end its threads; a second call does nothing."""
        if self.closed:
            return
        self._drawing.flush()
        if self.failure is None:
            self._forward("finalize", status)
            self._record.flush()
        self.closed = True
        for lane in (self._drawing, self._record):
            lane.close()
        failures = [f for f in (self._record.failure, self._drawing.failure) if f]
        if failures:
            log.warning("tracking: the %s logger was switched off after %s; %d logging calls were lost", self.name,
                        " and ".join(failures), self.lost_calls)
