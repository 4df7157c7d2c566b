"""Callbacks with Lightning's hook signatures: `hook(trainer, module, ...)`.

A callback observes and requests; it never drives the loop. To stop training it sets `trainer.should_stop`.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any


def improves(value: float, best: float | None, mode: str, min_delta: float = 0.0) -> bool:
    """Whether `value` beats `best` by more than `min_delta` ("max": higher is better, "min": lower is). NaN never
    does; any other value beats `best` None. The one meaning of "best" in this project: checkpointing, early
    stopping, best scores, the report and sweeps all ask here."""
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    return value < best - min_delta if mode == "min" else value > best + min_delta


def best_index(values, mode: str) -> int | None:
    """The position of the best value in `values` (the first of equals), None when none is a number."""
    best = None
    for index, value in enumerate(values):
        if improves(value, None if best is None else values[best], mode):
            best = index
    return best


class Callback:
    """Every hook the trainer calls on callbacks; override the ones you need."""

    def on_fit_start(self, trainer, module): ...
    def on_fit_end(self, trainer, module): ...
    def on_train_start(self, trainer, module): ...
    def on_train_end(self, trainer, module): ...
    def on_train_epoch_start(self, trainer, module): ...
    def on_train_epoch_end(self, trainer, module): ...
    def on_train_batch_start(self, trainer, module, batch, batch_idx): ...
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx): ...
    def on_before_optimizer_step(self, trainer, module, optimizer): ...
    def on_validation_start(self, trainer, module): ...
    def on_validation_epoch_start(self, trainer, module): ...
    def on_validation_batch_start(self, trainer, module, batch, batch_idx): ...
    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx): ...
    def on_validation_epoch_end(self, trainer, module): ...
    def on_validation_end(self, trainer, module): ...
    def on_test_start(self, trainer, module): ...
    def on_test_epoch_start(self, trainer, module): ...
    def on_test_batch_start(self, trainer, module, batch, batch_idx): ...
    def on_test_batch_end(self, trainer, module, outputs, batch, batch_idx): ...
    def on_test_epoch_end(self, trainer, module): ...
    def on_test_end(self, trainer, module): ...
    def on_exception(self, trainer, module, exception): ...


class _Monitor(Callback):
    """Shared by checkpointing and early stopping: read `monitor` after validation and say whether it improved."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.monitor, self.mode, self.min_delta = monitor, mode, abs(min_delta)
        self.best_score = math.inf if mode == "min" else -math.inf

    def _current(self, trainer) -> float:
        if self.monitor not in trainer.callback_metrics:
            known = ", ".join(sorted(trainer.callback_metrics)) or "none"
            raise KeyError(f"{type(self).__name__} monitors {self.monitor!r}, which was not logged (logged: {known})")
        return trainer.callback_metrics[self.monitor]

    def _improves(self, score: float) -> bool:
        return improves(score, self.best_score, self.mode, self.min_delta)


class ModelCheckpoint(_Monitor):
    """After each validation, save the module as `<dirpath>/best` when `monitor` improved.

    `dirpath` defaults to `<trainer.default_root_dir>/checkpoints`. The module's `save_pretrained` decides the
    format (a Hugging Face folder for `ColaModel`). `best_metrics` holds every metric of the best validation.
    """

    def __init__(self, dirpath: str | None = None, monitor: str = "valid/loss", mode: str = "min", filename: str = "best",
                 log_model: bool = False, artifact_name: str = "model"):
        """With `log_model`, the best checkpoint goes to the logger as an artifact (aliases best, latest) when fit
        ends."""
        super().__init__(monitor, mode)
        self.dirpath, self.filename = dirpath, filename
        self.log_model, self.artifact_name = log_model, artifact_name
        self.best_model_path: str | None = None
        self.best_step: int | None = None
        self.best_metrics: dict[str, float] = {}

    def on_validation_end(self, trainer, module):
        score = self._current(trainer)
        if not self._improves(score):
            return
        self.best_score, self.best_step = score, trainer.global_step
        self.best_metrics = dict(trainer.callback_metrics)
        dirpath = self.dirpath or os.path.join(trainer.default_root_dir, "checkpoints")
        self.best_model_path = os.path.join(dirpath, self.filename)
        trainer.save_checkpoint(self.best_model_path)

    def on_fit_end(self, trainer, module):
        if self.best_model_path:
            trainer.logger.log_summary({"checkpoint/path": self.best_model_path, "checkpoint/monitor": self.monitor,
                                        "checkpoint/mode": self.mode, "checkpoint/score": self.best_score,
                                        "checkpoint/step": self.best_step})
        if self.log_model and self.best_model_path:
            trainer.logger.log_artifact(self.best_model_path, name=self.artifact_name, type="model",
                                        aliases=("best", "latest"))

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "best_step": self.best_step, "best_model_path": self.best_model_path,
                "best_metrics": self.best_metrics}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score, self.best_step = state["best_score"], state["best_step"]
        self.best_model_path, self.best_metrics = state["best_model_path"], dict(state["best_metrics"])


class EarlyStopping(_Monitor):
    """Request a stop when `monitor` has not improved for `patience` validations in a row."""

    def __init__(self, monitor: str = "valid/loss", patience: int = 3, mode: str = "min", min_delta: float = 0.0):
        super().__init__(monitor, mode, min_delta)
        self.patience = patience
        self.wait_count = 0
        self.stopped_step: int | None = None

    def on_validation_end(self, trainer, module):
        score = self._current(trainer)
        if self._improves(score):
            self.best_score, self.wait_count = score, 0
            return
        self.wait_count += 1
        if self.wait_count >= self.patience:
            trainer.should_stop = True
            self.stopped_step = trainer.global_step

    def state_dict(self) -> dict[str, Any]:
        return {"best_score": self.best_score, "wait_count": self.wait_count, "stopped_step": self.stopped_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best_score, self.wait_count, self.stopped_step = state["best_score"], state["wait_count"], \
            state["stopped_step"]


class BestScores(Callback):
    """The best value of each metric in `modes` ({"valid/loss": "min", ...}) and the step where it occurred, written
    to the logger's summary as `best/<name>` and `best/<name>_step` when fit ends."""

    def __init__(self, modes: dict[str, str]) -> None:
        self.modes = dict(modes)
        self.best: dict[str, tuple[float, int]] = {}

    def on_validation_end(self, trainer, module):
        for name, mode in self.modes.items():
            value, previous = trainer.callback_metrics.get(name), self.best.get(name)
            if improves(value, None if previous is None else previous[0], mode):
                self.best[name] = (value, trainer.global_step)

    def state_dict(self) -> dict[str, Any]:
        return {"best": {name: list(value) for name, value in self.best.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = {name: tuple(value) for name, value in state["best"].items()}

    def summary(self) -> dict[str, float]:
        values: dict[str, float] = {}
        for name, (value, step) in self.best.items():
            values[f"best/{name}"], values[f"best/{name}_step"] = value, step
        return values

    def on_fit_end(self, trainer, module):
        trainer.logger.log_summary(self.summary())


class ValidationLine(Callback):
    """After each validation, one short line on stdout (main process): epoch, step, the monitored metric and its best
    so far, the losses, and the time since training began. It fits any terminal and reads the same in a log file."""

    def __init__(self, monitor: str, mode: str, losses: tuple[str, ...] = ("valid/loss", "train/loss")) -> None:
        self.monitor, self.mode, self.losses = monitor, mode, losses
        self.best: tuple[float, int] | None = None
        self._start = time.monotonic()

    def on_fit_start(self, trainer, module):
        self._start = time.monotonic()

    def on_validation_end(self, trainer, module):
        from tqdm.auto import tqdm

        metrics, step = trainer.callback_metrics, trainer.global_step
        value = metrics.get(self.monitor)
        if value is not None and improves(value, None if self.best is None else self.best[0], self.mode):
            self.best = (value, step)
        parts = [f"epoch {trainer.current_epoch}, step {step}:"]
        if value is not None:
            best = f" (best {self.best[0]:.4f} at step {self.best[1]})" if self.best is not None else ""
            parts.append(f"{self.monitor} {value:.4f}{best},")
        parts += [f"{name} {metrics[name]:.4f}," for name in self.losses if name in metrics]
        seconds = time.monotonic() - self._start
        parts.append(f"{int(seconds // 60)} min {seconds % 60:02.0f} s" if seconds >= 60 else f"{seconds:.0f} s")
        if trainer.is_main_process:
            tqdm.write(" ".join(parts))

    def state_dict(self) -> dict[str, Any]:
        return {"best": list(self.best) if self.best is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = tuple(state["best"]) if state.get("best") is not None else None


class Pruning(Callback):
    """Report `monitor` after each validation to a hyperparameter search's `trial` and ask the trainer to stop when
    the trial should be pruned (Optuna's `PyTorchLightningPruningCallback`, without the exception inside the loop).

    `trial` is anything with `report(value, step)` and `should_prune()`, such as an `optuna.Trial`; the step is the
    epoch. The run then ends normally: checkpoints, summary and report are written. `values` holds every reported
    value by epoch; `pruned_epoch` says where the trial was pruned, and `stop_status` is "pruned" then, which tells
    the script how to record the run. Whoever drives the search turns a pruned run into the trial's verdict."""

    def __init__(self, trial, monitor: str) -> None:
        self.trial, self.monitor = trial, monitor
        self.values: dict[int, float] = {}
        self.pruned_epoch: int | None = None

    @property
    def stop_status(self) -> str | None:
        return "pruned" if self.pruned_epoch is not None else None

    def on_validation_end(self, trainer, module):
        if self.monitor not in trainer.callback_metrics:
            known = ", ".join(sorted(trainer.callback_metrics)) or "none"
            raise KeyError(f"Pruning monitors {self.monitor!r}, which was not logged (logged: {known})")
        value = float(trainer.callback_metrics[self.monitor])
        epoch = trainer.current_epoch
        self.values[epoch] = value
        self.trial.report(value, step=epoch)
        if self.trial.should_prune():
            self.pruned_epoch = epoch
            trainer.should_stop = True

    def on_fit_end(self, trainer, module):
        if self.pruned_epoch is not None:
            trainer.logger.log_summary({"pruned": True, "pruned/epoch": self.pruned_epoch,
                                        "pruned/step": trainer.global_step,
                                        f"pruned/{self.monitor}": self.values[self.pruned_epoch]})
