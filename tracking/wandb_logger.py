"""The Weights & Biases backend: everything the seed's dashboard shows, and never a reason for training to stop.

- Mode: `mode` if given, else $WANDB_MODE, else online when credentials exist and offline when they do not (with one
  line; W&B prints the `wandb sync` command when the run ends). Online with no credentials, or with a server that does not answer within
  seconds, falls back to offline with a warning instead of prompting for a key or waiting out `init_timeout`.
- x-axis: every row carries `trainer/global_step`, declared with `define_metric`; `step=` is never passed to
  `run.log` (W&B silently drops a row whose step is lower than the last one).
- Beyond the interface, W&B's own charts: the confusion matrix by the seed's three methods (`conf`: wandb.plot, `cm`:
  wandb's scikit-learn integration, and a heatmap figure drawn by the caller, as an image), `wandb.plot.roc_curve`
  and `wandb.plot.pr_curve`; the caller reaches them with `logger.backends()` and `call()`.
- `finalize` calls `run.finish()` bounded by `finish_timeout`; a failed or interrupted run finishes with exit code 1.
"""
from __future__ import annotations

import logging
import netrc
import os
import urllib.error
import urllib.request
from typing import Sequence
from urllib.parse import urlparse

from tracking.base import ExperimentLogger
from tracking.plots import image_to_pil
from tracking.secrets import scrub

log = logging.getLogger(__name__)

DEFAULT_PROJECT = "MLOps Basics"
STEP_METRIC = "trainer/global_step"
CONFUSION_METHODS = {"wandb": "conf", "sklearn": "cm", "seaborn": "heatmap"}
MODES = ("online", "offline", "disabled")


def _base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def has_credentials() -> bool:
    """An API key or identity token in the environment, or a .netrc entry for the W&B host."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(urlparse(_base_url()).hostname or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def server_answers(timeout: float) -> bool:
    """Whether the W&B server sends any HTTP answer (an error status counts) within `timeout` seconds."""
    try:
        urllib.request.urlopen(_base_url(), timeout=timeout).close()
    except urllib.error.HTTPError as exc:  # a 4xx answer is an answer; a 5xx means W&B would retry for minutes
        return exc.code < 500
    except Exception:  # refused, DNS failure, time-out, TLS error
        return False
    return True


class WandbLogger(ExperimentLogger):
    name = "wandb"

    def __init__(
        self,
        run_dir: str,
        project: str = DEFAULT_PROJECT,
        entity: str | None = None,
        mode: str | None = None,
        run_name: str | None = None,
        tags: Sequence[str] = (),
        group: str | None = None,
        confusion_matrix: Sequence[str] = tuple(CONFUSION_METHODS),
        init_timeout: float = 30.0,
        finish_timeout: float = 60.0,
        probe_timeout: float = 5.0,
    ) -> None:
        import wandb

        self._wandb = wandb
        self.run_dir = run_dir
        self.confusion_methods = [CONFUSION_METHODS[m] for m in confusion_matrix]
        os.makedirs(run_dir, exist_ok=True)
        mode = self._choose_mode(mode, probe_timeout)
        # A run folder keeps its W&B run id, so a resumed training run continues the same W&B run.
        self._id_file = os.path.join(run_dir, "wandb", "run-id")
        run_id = open(self._id_file, encoding="utf-8").read().strip() if os.path.isfile(self._id_file) else None
        kwargs = dict(project=project, entity=entity, name=run_name, group=group, tags=list(tags) or None,
                      dir=run_dir,
                      # silent: W&B's own lines would land after the script's last line (the JSON summary);
                      # this backend says what matters itself, on stderr
                      settings=wandb.Settings(init_timeout=init_timeout, finish_timeout=finish_timeout,
                                              silent=True),
                      reinit="create_new", id=run_id, resume="allow" if run_id else None)
        try:
            self.run = wandb.init(mode=mode, **kwargs)
        except Exception as exc:
            if mode != "online":
                raise
            log.warning("wandb: could not start an online run (%s: %s); logging offline instead",
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            mode = "offline"
            self.run = wandb.init(mode=mode, **kwargs)
        self.mode = mode
        if mode != "disabled" and run_id is None:
            os.makedirs(os.path.dirname(self._id_file), exist_ok=True)
            with open(self._id_file, "w", encoding="utf-8") as f:
                f.write(self.run.id)
        if mode == "online":
            log.warning("wandb: run page %s", self.run.url)
        elif mode == "offline":
            log.warning("wandb: logging offline to %s", self.offline_dir)
        self.run.define_metric(STEP_METRIC)
        self.run.define_metric("*", step_metric=STEP_METRIC, step_sync=True)
        self._finished = False

    @staticmethod
    def _choose_mode(mode: str | None, probe_timeout: float) -> str:
        mode = mode or os.environ.get("WANDB_MODE") or None
        if mode in ("dryrun",):
            mode = "offline"
        if mode not in (None, "online", "run"):
            return mode
        if not has_credentials():
            log.warning("wandb: no API key found (run `wandb login` or set WANDB_API_KEY); logging offline, and the "
                        "run ends by printing the `wandb sync` command that uploads it")
            return "offline"
        if not server_answers(probe_timeout):
            log.warning("wandb: %s did not answer within %.0f s; logging offline", _base_url(), probe_timeout)
            return "offline"
        return "online"

    @property
    def experiment(self):
        return self.run

    @property
    def log_dir(self) -> str:
        return self.run_dir

    @property
    def offline_dir(self) -> str:
        """The run's own folder (`.../wandb/offline-run-<time>-<id>`), what `wandb sync` takes."""
        return os.path.dirname(self.run.dir)

    def _log(self, data: dict, step: int) -> None:
        self.run.log({**data, STEP_METRIC: int(step)})

    def log_hyperparams(self, params) -> None:
        self.run.config.update(scrub(dict(params)), allow_val_change=True)

    def log_metrics(self, metrics, step: int) -> None:
        self._log({k: float(v) for k, v in metrics.items()}, step)

    def log_table(self, key: str, dataframe, step: int) -> None:
        self._log({key: self._wandb.Table(dataframe=dataframe, allow_mixed_types=True)}, step)

    def log_image(self, key: str, image, step: int) -> None:
        self._log({key: self._wandb.Image(image_to_pil(image))}, step)

    # W&B's own charts, beyond the ExperimentLogger interface: reached with `logger.backends()` and `call()`
    # (models/charts.py), so they run on this backend's worker thread like every other call.
    def log_confusion_matrix(self, key, y_true, y_pred, class_names, step, probs=None, heatmap=None) -> None:
        """The confusion-matrix charts chosen by `confusion_matrix`: `conf`, `cm` and `heatmap` (a Figure) as `key`."""
        wandb = self._wandb
        y_true, y_pred, names = [int(v) for v in y_true], [int(v) for v in y_pred], list(class_names)
        charts = {}
        if "conf" in self.confusion_methods:
            charts["conf"] = wandb.plot.confusion_matrix(
                probs=None if probs is None else [list(map(float, row)) for row in probs],
                y_true=y_true, preds=None if probs is not None else y_pred, class_names=names)
        if "cm" in self.confusion_methods:
            # wandb.sklearn.plot_confusion_matrix logs the chart itself, without our x-axis; build it and log here.
            from wandb.integration.sklearn import calculate

            charts["cm"] = calculate.confusion_matrix(y_true, y_pred, names, None, None, False)
        if "heatmap" in self.confusion_methods and heatmap is not None:
            charts[key] = wandb.Image(image_to_pil(heatmap))
        if charts:
            self._log(charts, step)

    def log_roc_curve(self, key, y_true, probs, class_names, step) -> None:
        self._log({key: self._wandb.plot.roc_curve([int(v) for v in y_true], [list(map(float, r)) for r in probs],
                                                   labels=list(class_names))}, step)

    def log_pr_curve(self, key, y_true, probs, class_names, step) -> None:
        self._log({key: self._wandb.plot.pr_curve([int(v) for v in y_true], [list(map(float, r)) for r in probs],
                                                  labels=list(class_names))}, step)

    def log_artifact(self, path: str, name: str, type: str = "model", aliases=()) -> None:
        artifact = self._wandb.Artifact(name=name, type=type)
        if os.path.isdir(path):
            artifact.add_dir(path)
        else:
            artifact.add_file(path)
        self.run.log_artifact(artifact, aliases=list(aliases))

    def log_summary(self, values) -> None:
        self.run.summary.update(dict(values))

    def finalize(self, status: str = "success") -> None:
        if self._finished:
            return
        self._finished = True
        self.run.finish(exit_code=0 if status == "success" else 1)
        if self.mode == "offline":
            log.warning("wandb: upload this offline run with: wandb sync %s", os.path.relpath(self.offline_dir))
