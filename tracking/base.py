"""The logger interface every tracking backend implements, and the no-op backend.

`tracking` knows nothing of training, models or data: it receives numbers, tables (pandas DataFrames), images or
figures and files, each at an explicit global step, and writes them somewhere. It names no task, metric, chart or
flag. Charts (a confusion matrix, ROC curves) are built above it, as tables and figures; a backend with charts of its
own (W&B) is reached through `backends()` and `submit(fn)`. Rank logic lives in `tracking.factory`; a backend never
asks which process it runs on.
"""
from __future__ import annotations

import re
from abc import ABC, abstractmethod
from typing import Any, Callable, Mapping, Sequence


def flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested hyperparameters as `a.b` keys; values other than bool, int, float and str as strings."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value if isinstance(value, (bool, int, float, str)) else str(value)
    return flat


def safe_name(key: str) -> str:
    """A key as a file-name stem: `valid/My Chart` -> `valid-My_Chart`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key.replace("/", "-")).strip("_") or "unnamed"


class ExperimentLogger(ABC):
    """What the trainer and callbacks may ask of a tracking backend.

    `step` is the trainer's global step (optimizer steps so far). Steps passed to one logger never decrease.
    `experiment` is the backend's raw object (a `wandb.Run`, a writer, ...) for what this interface does not cover.
    """

    name: str = "base"

    @property
    def experiment(self) -> Any:
        return None

    @property
    def log_dir(self) -> str | None:
        """Folder where this backend writes files, if it writes any."""
        return None

    def state_dict(self) -> dict:
        """What a resumed run needs to continue this backend's record without duplicated or missing rows."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()` taken in an earlier, interrupted process."""

    def backends(self) -> list["ExperimentLogger"]:
        """The backends behind this logger, each as it must be called (through its failure guard): `[self]` for one
        backend, every member of a fan-out, none for the no-op logger. Each has the `name` of its backend."""
        return [self]

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run `fn(backend, *args, **kwargs)` the way this backend's interface methods run: for a guarded backend,
        queued to its worker thread and bounded by the guard's time-out. For what only this backend can do (W&B's
        own charts, drawn by the code that builds the charts)."""
        fn(self, *args, **kwargs)

    @abstractmethod
    def log_hyperparams(self, params: Mapping[str, Any]) -> None: ...

    @abstractmethod
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None: ...

    @abstractmethod
    def log_table(self, key: str, dataframe, step: int) -> None:
        """`dataframe` is a pandas DataFrame."""

    def log_image(self, key: str, image, step: int) -> None:
        """`image`: a matplotlib Figure, a PIL image or an HxW(xC) uint8 numpy array, drawn here as a PIL image for
        `log_pil_image`. A guarded backend (`build_logger`) runs this on its own thread, so a Figure is drawn off the
        training loop; give each backend a Figure of its own."""
        from tracking.files import image_to_pil

        self.log_pil_image(key, image_to_pil(image), step)

    @abstractmethod
    def log_pil_image(self, key: str, image, step: int) -> None:
        """`image` is a PIL image."""

    @abstractmethod
    def log_summary(self, values: Mapping[str, Any]) -> None:
        """Run-level values (best scores and their steps), kept apart from the per-step metrics."""

    @abstractmethod
    def log_artifact(self, path: str, name: str, type: str = "model", aliases: Sequence[str] = ()) -> None:
        """A file or folder to keep with the run (a checkpoint, a report)."""

    @abstractmethod
    def finalize(self, status: str = "success") -> None:
        """Flush and close. `status` is "success", "failed" or "interrupted". Called once by the guard, which makes
        a second call harmless."""


class _DummyExperiment:
    """Every attribute is a callable that does nothing and returns this object again."""

    def __getattr__(self, _name: str) -> "_DummyExperiment":
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> "_DummyExperiment":
        return self

    def __getitem__(self, _key: Any) -> "_DummyExperiment":
        return self

    def __bool__(self) -> bool:
        return False


class NoOpLogger(ExperimentLogger):
    """Accepts everything and writes nothing: `--logger none`, and every process but the main one."""

    name = "none"

    def __init__(self) -> None:
        self._experiment = _DummyExperiment()

    @property
    def experiment(self) -> _DummyExperiment:
        return self._experiment

    def log_hyperparams(self, params):
        pass

    def log_metrics(self, metrics, step):
        pass

    def log_table(self, key, dataframe, step):
        pass

    def log_image(self, key, image, step):
        pass

    def log_pil_image(self, key, image, step):
        pass

    def log_summary(self, values):
        pass

    def log_artifact(self, path, name, type="model", aliases=()):
        pass

    def finalize(self, status="success"):
        pass

    def backends(self) -> list[ExperimentLogger]:
        return []

    def submit(self, fn, *args, **kwargs):
        pass


class ForwardingLogger(ExperimentLogger):
    """Every interface method as one call to `_forward(method, *args, **kwargs)`: the base of wrappers such as the
    fan-out and the failure guard, which treat all methods alike."""

    def _forward(self, method: str, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError

    def log_hyperparams(self, params):
        self._forward("log_hyperparams", params)

    def log_metrics(self, metrics, step):
        self._forward("log_metrics", metrics, step)

    def log_table(self, key, dataframe, step):
        self._forward("log_table", key, dataframe, step)

    def log_image(self, key, image, step):
        self._forward("log_image", key, image, step)

    def log_pil_image(self, key, image, step):
        self._forward("log_pil_image", key, image, step)

    def log_summary(self, values):
        self._forward("log_summary", values)

    def log_artifact(self, path, name, type="model", aliases=()):
        self._forward("log_artifact", path, name, type=type, aliases=aliases)

    def finalize(self, status="success"):
        self._forward("finalize", status)

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self._forward("submit", fn, *args, **kwargs)
