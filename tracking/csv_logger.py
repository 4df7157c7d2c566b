"""The local backend: one run folder of plain files that pandas, a spreadsheet or an image viewer opens.

    <run_dir>/hparams.yaml
    <run_dir>/metrics.csv                 epoch, step, one column per metric (Lightning's CSVLogger layout)
    <run_dir>/tables/<key>-step<N>.csv
    <run_dir>/plots/<key>-step<N>.png      figures and other images
    <run_dir>/summary.yaml                best scores of the run and their steps
    <run_dir>/artifacts.csv               files kept with the run (checkpoints live in checkpoints/)

Every row is flushed when it is logged, so a killed run keeps what it logged. A metric that first appears mid-run
rewrites metrics.csv once with the wider header (to a temporary file, then renamed over the old one).
"""
from __future__ import annotations

import csv
import os
import shutil
from typing import Any, Mapping

import yaml

from tracking.base import ExperimentLogger, safe_name
from tracking.files import atomic_write, write_text

FIXED_COLUMNS = ("epoch", "step")


def _plain(value: Any) -> Any:
    """Hyperparameter values as YAML-safe builtins."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        return str(value)  # also str subclasses such as torch's TorchVersion, which YAML cannot represent
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


class CSVLogger(ExperimentLogger):
    name = "csv"

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        os.makedirs(run_dir, exist_ok=True)
        self.metrics_path = os.path.join(run_dir, "metrics.csv")
        self._hparams: dict[str, Any] = {}
        self._summary: dict[str, Any] = {}
        self._rows: list[dict[str, Any]] = []
        self._columns: list[str] = list(FIXED_COLUMNS)
        self._file = None
        self._writer = None

    @property
    def experiment(self) -> "CSVLogger":
        return self

    @property
    def log_dir(self) -> str:
        return self.run_dir

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self._hparams.update(_plain(dict(params)))
        self._write_yaml("hparams.yaml", self._hparams)

    def _write_yaml(self, name: str, data: dict) -> None:
        write_text(os.path.join(self.run_dir, name), yaml.safe_dump(data, sort_keys=False))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        row = {k: float(v) for k, v in metrics.items() if k not in FIXED_COLUMNS}
        row["step"] = int(step)
        if "epoch" in metrics:
            row["epoch"] = int(metrics["epoch"])
        self._rows.append(row)
        new = sorted(k for k in row if k not in self._columns)
        if new or self._file is None:
            self._columns.extend(new)
            self._rewrite()
        else:
            self._writer.writerow(row)
            self._file.flush()

    def state_dict(self) -> dict:
        return {"rows": len(self._rows)}

    def load_state_dict(self, state: dict) -> None:
        """Keep the first `rows` rows of the metrics.csv an interrupted run left (it may have written more after
        its checkpoint; those rows will be logged again) and go on appending."""
        if not os.path.isfile(self.metrics_path):  # killed before its first row was written
            return
        with open(self.metrics_path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            self._columns = list(reader.fieldnames or FIXED_COLUMNS)
            self._rows = [{k: v for k, v in row.items() if v != ""} for row in reader]
        if state.get("rows") is not None:  # None: this backend was off when the checkpoint was taken; keep every row
            self._rows = self._rows[: state["rows"]]
        self._rewrite()

    def _rewrite(self) -> None:
        if self._file is not None:
            self._file.close()

        def write(tmp):
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=self._columns)
                writer.writeheader()
                writer.writerows(self._rows)

        atomic_write(self.metrics_path, write)
        self._file = open(self.metrics_path, "a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, fieldnames=self._columns)

    def _path(self, folder: str, key: str, step: int, suffix: str) -> str:
        os.makedirs(os.path.join(self.run_dir, folder), exist_ok=True)
        return os.path.join(self.run_dir, folder, f"{safe_name(key)}-step{int(step)}{suffix}")

    def log_table(self, key: str, dataframe, step: int) -> None:
        atomic_write(self._path("tables", key, step, ".csv"), lambda tmp: dataframe.to_csv(tmp, index=False))

    def log_pil_image(self, key: str, image, step: int) -> None:
        atomic_write(self._path("plots", key, step, ".png"), lambda tmp: image.save(tmp, format="png"))

    def log_summary(self, values) -> None:
        self._summary.update(_plain(dict(values)))
        self._write_yaml("summary.yaml", self._summary)

    def log_artifact(self, path: str, name: str, type: str = "model", aliases=()) -> None:
        source = os.path.abspath(path)
        if os.path.commonpath([source, os.path.abspath(self.run_dir)]) != os.path.abspath(self.run_dir):
            target = os.path.join(self.run_dir, "artifacts", safe_name(name))
            if os.path.isdir(source):
                shutil.copytree(source, target, dirs_exist_ok=True)
            else:
                os.makedirs(target, exist_ok=True)
                shutil.copy2(source, target)
            source = target
        index = os.path.join(self.run_dir, "artifacts.csv")
        rows = [] if os.path.exists(index) else [["name", "type", "aliases", "path"]]
        with open(index, "a", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([*rows, [name, type, ",".join(aliases), os.path.relpath(source, self.run_dir)]])

    def finalize(self, status: str = "success") -> None:
        if self._file is not None:
            self._file.close()
        self._file = self._writer = None
