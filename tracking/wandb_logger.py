"""The Weights & Biases backend: everything the seed's dashboard shows, and never a reason for training to stop.

- Mode: `mode` if given, else $WANDB_MODE, else online when credentials exist and offline when they do not. Online
  with no credentials, or a server that does not answer within seconds, falls back to offline with a warning instead
  of prompting for a key or waiting out `init_timeout`; the run ends by printing the `wandb sync` command.
- x-axis: every row carries `trainer/global_step`, declared with `define_metric`; `step=` is never passed to
  `run.log` (W&B silently drops a row whose step is lower than the last one). `log_dict` logs any W&B objects so,
  for the charts W&B draws itself (built by the chart code and run on this backend's thread with `submit`).
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
from tracking.files import RunIdFile, first_line

log = logging.getLogger(__name__)

DEFAULT_PROJECT = "MLOps Basics"
STEP_METRIC = "trainer/global_step"


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


def choose_mode(mode: str | None, probe_timeout: float) -> str:
    """online, offline or disabled: what was asked, unless online cannot work (no key, no answer)."""
    mode = mode or os.environ.get("WANDB_MODE") or None
    mode = "offline" if mode == "dryrun" else mode
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


class WandbLogger(ExperimentLogger):
    name = "wandb"

    def __init__(self, run_dir: str, project: str = DEFAULT_PROJECT, entity: str | None = None,
                 mode: str | None = None, run_name: str | None = None, tags: Sequence[str] = (),
                 group: str | None = None, init_timeout: float = 30.0, finish_timeout: float = 60.0,
                 probe_timeout: float = 5.0) -> None:
        import wandb

        self._wandb, self.run_dir = wandb, run_dir
        os.makedirs(run_dir, exist_ok=True)
        mode = choose_mode(mode, probe_timeout)
        ids = RunIdFile(run_dir, "wandb")  # a resumed training run continues the same W&B run
        run_id = ids.read()
        # silent: W&B's own lines would land after the script's last line (the JSON summary); this backend says
        # what matters itself, on stderr
        kwargs = dict(project=project, entity=entity, name=run_name, group=group, tags=list(tags) or None,
                      dir=run_dir, reinit="create_new", id=run_id, resume="allow" if run_id else None,
                      settings=wandb.Settings(init_timeout=init_timeout, finish_timeout=finish_timeout, silent=True))
        try:
            self.run = wandb.init(mode=mode, **kwargs)
        except Exception as exc:
            if mode != "online":
                raise
            log.warning("wandb: could not start an online run (%s); logging offline instead",
                        first_line(exc, with_type=True))
            mode = "offline"
            self.run = wandb.init(mode=mode, **kwargs)
        self.mode = mode
        if mode != "disabled" and run_id is None:
            ids.write(self.run.id)
        if mode == "online":
            log.warning("wandb: run page %s", self.run.url)
        elif mode == "offline":
            log.warning("wandb: logging offline to %s", self.offline_dir)
        self.run.define_metric(STEP_METRIC)
        self.run.define_metric("*", step_metric=STEP_METRIC, step_sync=True)

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

    def log_dict(self, data: dict, step: int) -> None:
        """Any values W&B takes (numbers, `wandb.Table`, `wandb.Image`, `wandb.plot` charts) as one row at `step`."""
        self.run.log({**data, STEP_METRIC: int(step)})

    def log_hyperparams(self, params) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def log_metrics(self, metrics, step: int) -> None:
        self.log_dict({k: float(v) for k, v in metrics.items()}, step)

    def log_table(self, key: str, dataframe, step: int) -> None:
        self.log_dict({key: self._wandb.Table(dataframe=dataframe, allow_mixed_types=True)}, step)

    def log_pil_image(self, key: str, image, step: int) -> None:
        self.log_dict({key: self._wandb.Image(image)}, step)

    def log_artifact(self, path: str, name: str, type: str = "model", aliases=()) -> None:
        artifact = self._wandb.Artifact(name=name, type=type)
        (artifact.add_dir if os.path.isdir(path) else artifact.add_file)(path)
        self.run.log_artifact(artifact, aliases=list(aliases))

    def log_summary(self, values) -> None:
        self.run.summary.update(dict(values))

    def finalize(self, status: str = "success") -> None:
        self.run.finish(exit_code=0 if status == "success" else 1)
        if self.mode == "offline":
            log.warning("wandb: upload this offline run with: wandb sync %s", os.path.relpath(self.offline_dir))
