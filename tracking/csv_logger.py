"""The local backend: one run folder of plain files that pandas, a spreadsheet or an image viewer opens.

    <run_dir>/hparams.yaml
    <run_dir>/metrics.csv                 epoch, step, one column per metric (Lightning's CSVLogger layout)
    <run_dir>/tables/<key>-step<N>.csv
    <run_dir>/plots/<key>-step<N>.png      figures and other images
    <run_dir>/summary.yaml                best scores of the run and their steps
    <run_dir>/artifacts.csv               files kept with the run (checkpoints live in checkpoints/)

Every row is flushed when it is logged, so a killed run keeps what it logged. A metric that first appears mid-run
rewrites metrics.csv once with the wider header (to a temporary file, then renamed over the old one). Text cells of
tables that a spreadsheet would run as formulas are escaped (`files.spreadsheet_safe`).
"""
from __future__ import annotations

import csv
import io
import os
import shutil
from typing import Any, Mapping

import yaml

from tracking.base import ExperimentLogger, safe_name
from tracking.files import atomic_write, plain, spreadsheet_safe, write_text

FIXED_COLUMNS = ("epoch", "step")


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
        self._fd = None  # metrics.csv, open for appending rows

    @property
    def experiment(self) -> "CSVLogger":
        return self

    @property
    def log_dir(self) -> str:
        return self.run_dir

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        self._hparams.update(plain(dict(params)))
        self._write_yaml("hparams.yaml", self._hparams)

    def _write_yaml(self, name: str, data: dict) -> None:
        write_text(os.path.join(self.run_dir, name), yaml.safe_dump(data, sort_keys=False))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        row = {k: float(v) for k, v in metrics.items() if k not in FIXED_COLUMNS}
        row["step"] = int(step)
        if "epoch" in metrics:
            row["epoch"] = int(metrics["epoch"])
        new = sorted(k for k in row if k not in self._columns)
        if new or self._fd is None:
            self._rewrite(self._columns + new, self._rows + [row])
        else:
            self._append(row)
            self._rows.append(row)

    def _append(self, row: dict) -> None:
        """One row at the end of metrics.csv, all of it or none: a write that fails (a full disk) is cut off again,
        so the file never ends in half a row."""
        text = io.StringIO()
        csv.DictWriter(text, fieldnames=self._columns).writerow(row)
        end, data = os.lseek(self._fd, 0, os.SEEK_END), memoryview(text.getvalue().encode("utf-8"))
        try:
            while data:
                data = data[os.write(self._fd, data):]
        except BaseException:
            os.ftruncate(self._fd, end)
            raise

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
        self._rewrite(self._columns, self._rows)

    def _rewrite(self, columns: list[str], rows: list[dict]) -> None:
        """metrics.csv written anew with `columns` (atomically: on failure the old file stays), then kept open."""
        def write(tmp):
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(self.metrics_path, write)
        self._columns, self._rows = list(columns), list(rows)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.metrics_path, os.O_WRONLY | os.O_APPEND)

    def _path(self, folder: str, key: str, step: int, suffix: str) -> str:
        os.makedirs(os.path.join(self.run_dir, folder), exist_ok=True)
        return os.path.join(self.run_dir, folder, f"{safe_name(key)}-step{int(step)}{suffix}")

    def log_table(self, key: str, dataframe, step: int) -> None:
        atomic_write(self._path("tables", key, step, ".csv"),
                     lambda tmp: spreadsheet_safe(dataframe).to_csv(tmp, index=False))

    def log_pil_image(self, key: str, image, step: int) -> None:
        atomic_write(self._path("plots", key, step, ".png"), lambda tmp: image.save(tmp, format="png"))

    def log_summary(self, values) -> None:
        self._summary.update(plain(dict(values)))
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
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None
