"""The MLflow backend (`pip install -e ".[mlflow]"`): one MLflow run per run folder, in $MLFLOW_TRACKING_URI (a
`mlflow server`) or else `<output-dir>/mlflow.db`. Tables and images are artifacts named as in the run folder. The run
id is kept in `<run_dir>/mlflow/run-id`, so a resumed run continues it, skipping the values the interrupted process
logged already (counted per metric). HTTP retries are cut so a dead server is given up within the guard's time-out."""
from __future__ import annotations

import importlib.util
import logging
import numbers
import os
import re
import time
from pathlib import Path

from tracking.base import ExperimentLogger, flatten, safe_name
from tracking.files import RunIdFile

DEFAULT_EXPERIMENT = "MLOps Basics"
STATUS = {"success": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


def _check_writable(path: Path) -> None:
    """Raise PermissionError naming `path` unless it can be written: opened for appending, or created in its folder."""
    probe = path if path.exists() else path.parent / f".{path.name}.probe-{os.getpid()}"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        open(probe, "ab").close()
        if probe != path:
            probe.unlink()
    except OSError as exc:
        raise PermissionError(f"the MLflow store {path} cannot be written ({exc.strerror or exc}); set "
                              "MLFLOW_TRACKING_URI to a store or server that can be") from None


def _key(name) -> str:  # a name as MLflow accepts it: letters, digits, `_ - . / :` and spaces, 250 at most
    return re.sub(r"[^/\w.\- :]", "_", str(name))[:250]


class MlflowLogger(ExperimentLogger):
    name = "mlflow"

    def __init__(self, run_dir: str, experiment: str = DEFAULT_EXPERIMENT, run_name: str | None = None,
                 group: str | None = None) -> None:
        """`group`: the run is nested under a parent run of that name (one per group and experiment)."""
        if importlib.util.find_spec("mlflow") is None:  # stop at start, not at the first call; import it there
            raise ModuleNotFoundError("No module named 'mlflow': pip install -e '.[mlflow]'")
        for var, value in HTTP_ENV.items():
            os.environ.setdefault(var, value)
        self.run_dir, self.experiment_name, self.run_name, self.group = run_dir, experiment, run_name, group
        output, server = Path(run_dir).resolve().parent, os.environ.get("MLFLOW_TRACKING_URI")
        if not server:  # a store that cannot be written (read-only) fails here, in one line, not on every call
            _check_writable(output / "mlflow.db")
        # MLflow logs a traceback of its own for each failing store call; this backend's guard says it in one line
        logging.getLogger("mlflow").setLevel(logging.CRITICAL)
        self.tracking_uri = server or f"sqlite:///{output / 'mlflow.db'}"
        self._artifact_root = None if server else (output / "mlartifacts").as_uri()
        self._ids = RunIdFile(run_dir, "mlflow")
        self.client = self.run_id = None
        self._counts: dict[str, int] = {}  # values logged per metric by this run, resumed processes included
        self._stored: dict[str, int] = {}  # values per metric the store held when this process opened the run
        self._step = 0

    experiment = property(lambda self: self.client)

    def _open(self) -> str:
        if self.run_id is None:
            from mlflow import MlflowClient

            self.client = client = MlflowClient(self.tracking_uri)
            run_id = self._ids.read()
            if run_id:  # a resumed run folder: everything in the store counts as logged until load_state_dict
                client.update_run(run_id, status="RUNNING")
                stored = client.get_run(run_id).data.metrics
                self._stored = {k: len(client.get_metric_history(run_id, k)) for k in stored}
            else:
                found = client.get_experiment_by_name(self.experiment_name)
                experiment_id = found.experiment_id if found else client.create_experiment(
                    self.experiment_name, artifact_location=self._artifact_root)
                tags = {"run_dir": str(Path(self.run_dir).resolve())}
                if self.group:  # nested under the group's parent run
                    tags["mlflow.parentRunId"] = self._group_parent(experiment_id)
                run_id = client.create_run(experiment_id, run_name=self.run_name, tags=tags).info.run_id
                self._ids.write(run_id)
            self.run_id = run_id
        return self.run_id

    def _group_parent(self, experiment_id: str) -> str:
        """The run that holds the group's runs as nested runs: found by its `group` tag, else created (finished at
        once: it holds no values of its own)."""
        group = self.group.replace("'", "")
        found = self.client.search_runs([experiment_id], filter_string=f"tags.group = '{group}'", max_results=1)
        if found:
            return found[0].info.run_id
        parent = self.client.create_run(experiment_id, run_name=group, tags={"group": group}).info.run_id
        self.client.set_terminated(parent)
        return parent

    def log_hyperparams(self, params) -> None:
        from mlflow.entities import Param

        run_id, params = self._open(), {_key(k): v for k, v in flatten(dict(params)).items()}
        existing = self.client.get_run(run_id).data.params  # MLflow keeps a parameter's first value for good
        # MLflow splits a long batch, and cuts a value over its 6000 characters with a warning (never an error)
        self.client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items() if k not in existing])
        if params.get("git_commit"):
            self.client.set_tag(run_id, "mlflow.source.git.commit", str(params["git_commit"]))

    def log_metrics(self, metrics, step: int) -> None:
        from mlflow.entities import Metric

        run_id, now, batch, self._step = self._open(), int(time.time() * 1000), [], max(self._step, int(step))
        for key, value in ((_key(k), v) for k, v in metrics.items()):
            self._counts[key] = self._counts.get(key, 0) + 1
            if self._counts[key] > self._stored.get(key, 0):  # else logged by the interrupted process already
                batch.append(Metric(key, float(value), now, int(step)))
        if batch:
            self.client.log_batch(run_id, metrics=batch)

    def state_dict(self) -> dict:
        return {"counts": dict(self._counts)}

    def load_state_dict(self, state: dict) -> None:
        self._open()
        if "counts" not in state:  # this backend was not logging at the checkpoint: log everything from here on
            self._stored = {}
        self._counts = dict(state.get("counts", {}))

    def log_table(self, key: str, dataframe, step: int) -> None:
        path = f"tables/{safe_name(key)}-step{int(step)}.csv"
        self.client.log_text(self._open(), dataframe.to_csv(index=False), path)

    def log_pil_image(self, key: str, image, step: int) -> None:
        self.client.log_image(self._open(), image, artifact_file=f"plots/{safe_name(key)}-step{int(step)}.png")

    def log_summary(self, values) -> None:
        run_id = self._open()
        self.log_metrics({k: v for k, v in values.items() if isinstance(v, numbers.Real)}, self._step)
        for key, value in ((k, v) for k, v in values.items() if not isinstance(v, numbers.Real)):
            self.client.set_tag(run_id, _key(key), str(value))

    def log_artifact(self, path: str, name: str, type: str = "model", aliases=()) -> None:
        run_id, folder = self._open(), safe_name(name)
        (self.client.log_artifacts if os.path.isdir(path) else self.client.log_artifact)(run_id, path, folder)
        self.client.set_tag(run_id, f"artifact/{folder}", ", ".join([type, *aliases]))

    def finalize(self, status: str = "success") -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, STATUS.get(status, "FAILED"))
