"""The report of a classifier's run (or several, compared): what its folder holds, laid out on one self-contained
HTML page (tracking/page.py): curves, the best validation's confusion matrix, ROC and precision-recall curves, the
misclassified examples (sortable, filterable), hyperparameters and the best checkpoint.

Reads the files a run writes (the CSV backend's, with the keys models/charts.py and models/callbacks.py log and the
summary the trainer's callbacks write); knows nothing of how the run was trained.
"""
from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass, field

import pandas as pd
import yaml

from models.callbacks import EXAMPLES
from models.charts import CONFUSION_MATRIX, PR, ROC
from tracking.base import safe_name
from tracking.files import from_spreadsheet_safe
from tracking.page import figure_html, image_file_html, table_html, write_page
from trainer.run_folder import describe_status, read_status

TRAIN_CURVES = [("train/loss", "Training loss"), ("train/acc", "Training accuracy")]


@dataclass
class Run:
    path: str
    name: str
    metrics: pd.DataFrame
    hparams: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    status: dict = field(default_factory=dict)  # status.yaml, and whether its writer is alive (`read_status`)

    @classmethod
    def load(cls, path: str) -> "Run":
        metrics_path = os.path.join(path, "metrics.csv")
        if not os.path.isfile(metrics_path):
            raise FileNotFoundError(f"{path}: not a run folder (no metrics.csv); pass folders that train.py wrote")
        return cls(path=path, name=os.path.basename(os.path.normpath(path)), metrics=pd.read_csv(metrics_path),
                   hparams=_yaml(os.path.join(path, "hparams.yaml")), summary=_yaml(os.path.join(path, "summary.yaml")),
                   status=read_status(path))

    @property
    def validations(self) -> pd.DataFrame:
        cols = [c for c in self.metrics.columns if c.startswith("valid/") and not c.endswith("_step")]
        return self.metrics.dropna(subset=cols, how="all")[["epoch", "step", *cols]] if cols else pd.DataFrame()

    @property
    def monitor(self) -> str | None:
        """The metric the run chose its best checkpoint by, as the run recorded it."""
        return self.summary.get("checkpoint/monitor")

    @property
    def best_step(self) -> int | None:
        """The step of the best checkpoint, as the run recorded it, else of the last validation (an evaluation)."""
        if "checkpoint/step" in self.summary:
            return int(self.summary["checkpoint/step"])
        valid = self.validations
        return None if valid.empty else int(valid["step"].iloc[-1])

    def file(self, folder: str, key: str, suffix: str) -> str | None:
        step = self.best_step
        path = os.path.join(self.path, folder, f"{key}-step{step}{suffix}")
        return path if step is not None and os.path.isfile(path) else None

    def best_row(self) -> dict:
        valid = self.validations
        if valid.empty:
            return {}
        row = valid[valid["step"] == self.best_step]
        best = (row.iloc[-1] if len(row) else valid.iloc[-1]).dropna().to_dict()
        return {k: int(v) if k in ("epoch", "step") else v for k, v in best.items()}

    def headline(self) -> str:
        """One sentence: the best monitored score, where and when it was reached, and the checkpoint."""
        best, step = self.best_row(), self.best_step
        if step is None:
            return "No validation in this run."
        monitor = self.monitor
        score = self.summary.get("checkpoint/score", best.get(monitor or "", best.get(f"{monitor}_epoch")))
        where = f"step {step}" + (f", epoch {best['epoch']}" if "epoch" in best else "")
        text = f"Best {monitor} = {float(score):.4f} at {where}" if monitor and score is not None else \
            f"Last validation at {where}"
        checkpoint = self.summary.get("checkpoint/path")
        return text + (f"; checkpoint {checkpoint}." if checkpoint else "; no checkpoint recorded.")

    def tables_at_best(self) -> dict[str, str]:
        """Every table logged at the best step that has no plot of its own: key -> CSV path."""
        step = self.best_step
        folder = os.path.join(self.path, "tables")
        if step is None or not os.path.isdir(folder):
            return {}
        out = {}
        for name in sorted(os.listdir(folder)):
            match = re.fullmatch(rf"(.+)-step{step}\.csv", name)
            if match and not os.path.isfile(os.path.join(self.path, "plots", f"{match.group(1)}-step{step}.png")):
                out[match.group(1)] = os.path.join(folder, name)
        return out


COUNTS_SHOWN = 30  # classes up to which the confusion matrix's counts are a table of the page


def _table(path: str) -> pd.DataFrame:
    """A table the run logged, as it was logged (its CSV file escapes cells a spreadsheet would run)."""
    return from_spreadsheet_safe(pd.read_csv(path, keep_default_na=False))


def _yaml(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def _curves(runs: list[Run], metric: str, title: str) -> str | None:
    """Step values as lines and epoch values as markers, one colour per run."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6))
    ax = fig.subplots()
    drawn = False
    for index, run in enumerate(runs):
        colour = f"C{index}"
        label = f"{run.name}: " if len(runs) > 1 else ""
        for suffix, style in (("_step", {"linewidth": 1, "alpha": 0.6}), ("_epoch", {"marker": "o"}), ("", {"marker": "o"})):
            column = metric + suffix
            if column in run.metrics:
                data = run.metrics.dropna(subset=[column])
                if len(data):
                    ax.plot(data["step"], data[column], color=colour, label=f"{label}{column}", **style)
                    drawn = True
    if not drawn:
        return None
    ax.set(title=title, xlabel="global step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_html(fig)


def _validation_metrics(runs: list[Run]) -> list[str]:
    names = []
    for run in runs:
        for column in run.validations.columns:
            name = re.sub(r"_epoch$", "", column)
            if column.startswith("valid/") and name not in names:
                names.append(name)
    return names


def _run_section(run: Run, heading: bool) -> str:
    parts = [f'<section class="run"><h2>{html.escape(run.name)}</h2>' if heading else '<section class="run">',
             f'<p class="path">{html.escape(os.path.abspath(run.path))}</p>',
             f'<p class="status" id="status-{_id(run)}">Run {html.escape(describe_status(run.status))}.</p>'
             if run.status.get("status") else ""]
    step = run.best_step
    if not run.summary.get("checkpoint/path"):
        parts.append(f"<p>No checkpoint recorded; figures below are from the best validation by "
                     f"{html.escape(str(run.monitor or 'step (the last)'))}.</p>")
    best = run.best_row()
    if best:
        parts.append(f"<h3>Validation at step {step}</h3>")
        parts.append(table_html(pd.DataFrame([best]), f"best-{_id(run)}", sortable=False))
    parts.append(f"<h3>Confusion matrix, ROC and precision-recall at step {step}</h3><div class='grid'>")
    parts.append(image_file_html(run.file("plots", safe_name(CONFUSION_MATRIX), ".png"), "Confusion matrix"))
    parts.append(image_file_html(run.file("plots", ROC, ".png"), "ROC curve"))
    parts.append(image_file_html(run.file("plots", PR, ".png"), "Precision-recall curve"))
    parts.append("</div>")
    counts = run.file("tables", safe_name(CONFUSION_MATRIX), ".csv")
    if counts:
        frame = _table(counts)
        frame = frame.set_index(frame.columns[0])  # the actual classes
        if len(frame) <= COUNTS_SHOWN:
            parts.append("<p>Counts (rows: actual, columns: predicted):</p>" +
                         frame.to_html(escape=True, border=0, table_id=f"confusion-{_id(run)}"))
        else:
            parts.append(f"<p>Counts of {len(frame)} classes: {html.escape(os.path.relpath(counts, run.path))} "
                         "(too many for a table here).</p>")
    for key, path in run.tables_at_best().items():
        if key in (EXAMPLES, safe_name(CONFUSION_MATRIX)):
            continue
        parts.append(f"<h3>{html.escape(key)} at step {step}</h3>")
        parts.append(table_html(_table(path), f"{_safe(key)}-{_id(run)}"))
    examples = run.file("tables", EXAMPLES, ".csv")
    parts.append(f"<h3>Misclassified validation examples at step {step}</h3>")
    if examples:
        frame = _table(examples)
        parts.append(f"<p>{len(frame)} examples. Click a column to sort.</p>")
        parts.append(table_html(frame, f"examples-{_id(run)}", filterable=True))
    else:
        parts.append('<p class="missing">No examples table in this run.</p>')
    if run.hparams:
        flat = pd.json_normalize(run.hparams, sep=".").T.reset_index()
        flat.columns = ["hyperparameter", "value"]
        parts.append("<h3>Hyperparameters</h3>" + table_html(flat.astype(str), f"hparams-{_id(run)}"))
    parts.append("</section>")
    return "\n".join(parts)


def _id(run: Run) -> str:
    return _safe(run.name)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)


def _differing_hparams(runs: list[Run], ignore: tuple[str, ...]) -> pd.DataFrame:
    """One row per hyperparameter whose value is not the same in every run, one column per run; keys starting with
    one of `ignore` (those that differ between any two runs, such as a run's name) are left out."""
    flat = [pd.json_normalize(run.hparams, sep=".").iloc[0].to_dict() if run.hparams else {} for run in runs]
    keys = [k for k in dict.fromkeys(k for f in flat for k in f) if not k.startswith(tuple(ignore))]
    rows = [{"hyperparameter": k, **{run.name: str(f.get(k, "")) for run, f in zip(runs, flat)}} for k in keys
            if len({str(f.get(k, "")) for f in flat}) > 1]
    return pd.DataFrame(rows, columns=["hyperparameter", *(run.name for run in runs)])


def build_report(run_dirs: list[str], output: str, ignore: tuple[str, ...] = ()) -> str:
    """Write the report for `run_dirs` to `output` (atomically) and return its path. Comparing runs, hyperparameters
    starting with one of `ignore` are not listed among those that differ."""
    runs = [Run.load(path) for path in run_dirs]
    title = f"Run {runs[0].name}" if len(runs) == 1 else f"{len(runs)} runs compared"
    body = [f"<h1>{html.escape(title)}</h1>"]
    if len(runs) == 1:
        body.append(f'<p class="headline" id="headline">{html.escape(runs[0].headline())}</p>')
    else:
        body.append("<ul class='headline' id='headline'>" + "".join(
            f"<li><b>{html.escape(run.name)}</b>: {html.escape(run.headline())}</li>" for run in runs) + "</ul>")
        rows = [{"run": run.name, "monitor": run.monitor, "best step": run.best_step,
                 **{k: v for k, v in run.best_row().items() if k != "step"}} for run in runs]
        body.append("<h2>Best validation of each run</h2>" + table_html(pd.DataFrame(rows), "compare"))
        differing = _differing_hparams(runs, ignore)
        body.append("<h2>Hyperparameters that differ</h2>" + (table_html(differing, "hparams-diff") if len(differing)
                                                               else "<p>None: the runs share every hyperparameter.</p>"))
    body.append("<h2>Curves</h2><div class='grid'>")
    for metric, label in TRAIN_CURVES + [(m, m) for m in _validation_metrics(runs)]:
        image = _curves(runs, metric, label)
        if image:
            body.append(image)
    body.append("</div>")
    body.extend(_run_section(run, heading=len(runs) > 1) for run in runs)
    return write_page(title, body, output)
