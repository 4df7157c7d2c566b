"""The report of a classifier's run (or several, compared), laid out on one self-contained HTML page
(tracking/page.py) that leads with the answer. On the first screen: the task and data, the best value of the
monitored metric and where, the validation scores (best and last) in one small table, the confusion matrix with class
names, and each class's scores. Then the curves, grouped (losses in one chart, the validation scores that move
together in another, identical curves drawn once), ROC and precision-recall, the misclassified examples (sortable,
filterable) and the settings that applied to the run. No part of the page is wider than the window.

Reads the files a run writes (the CSV backend's, with the keys models/charts.py and models/callbacks.py log and the
summary the trainer's callbacks write); knows nothing of how the run was trained.
"""
from __future__ import annotations

import html
import os
from dataclasses import dataclass, field

import pandas as pd
import yaml

from models.callbacks import EXAMPLES
from models.charts import CONFUSION_MATRIX, PER_CLASS, PR, ROC
from tracking.base import flatten, safe_name
from tracking.files import from_spreadsheet_safe
from tracking.page import figure_html, image_file_html, table_html, write_page
from trainer.run_folder import describe_status, read_status

COUNTS_SHOWN = 30  # classes up to which the confusion matrix's counts are a table of the page
# What the score names mean, said once under the scores table.
SCORES_NOTE = ("acc: the share of validation rows classified right; f1, precision_macro, recall_macro: the mean over "
               "classes; *_micro: over all rows (with one label a row they equal accuracy); mcc: Matthews "
               "correlation, 0 for a constant guess; loss: cross-entropy.")
# Settings of one tracker, shown only when the run used it.
TRACKER_SETTINGS = {"wandb": ("wandb_", "confusion_matrix"), "mlflow": ("mlflow_",)}


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
    def id(self) -> str:
        return "".join(c if c.isalnum() or c in "_-" else "-" for c in self.name)

    @property
    def validations(self) -> pd.DataFrame:
        """One row per validation: epoch, step and every validation score (epoch values, named without `_epoch`)."""
        cols = [c for c in self.metrics.columns if c.startswith("valid/") and not c.endswith("_step")]
        if not cols:
            return pd.DataFrame()
        frame = self.metrics.dropna(subset=cols, how="all")[["epoch", "step", *cols]]
        return frame.rename(columns={c: c.removesuffix("_epoch") for c in cols}).reset_index(drop=True)

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
        path = os.path.join(self.path, folder, f"{safe_name(key)}-step{step}{suffix}")
        return path if step is not None and os.path.isfile(path) else None

    def row_at(self, step: int | None) -> dict:
        valid = self.validations
        if valid.empty:
            return {}
        row = valid[valid["step"] == step]
        found = (row.iloc[-1] if len(row) else valid.iloc[-1]).dropna().to_dict()
        return {k: int(v) if k in ("epoch", "step") else v for k, v in found.items()}

    def best_row(self) -> dict:
        return self.row_at(self.best_step)

    def headline(self) -> str:
        """One sentence: the best monitored score, where and when it was reached, and the checkpoint."""
        best, step = self.best_row(), self.best_step
        if step is None:
            return "No validation in this run."
        monitor = self.monitor
        score = self.summary.get("checkpoint/score", best.get(monitor or ""))
        where = f"step {step}" + (f", epoch {best['epoch']}" if "epoch" in best else "")
        text = f"Best {monitor} = {float(score):.4f} at {where}" if monitor and score is not None else \
            f"Last validation at {where}"
        checkpoint = self.summary.get("checkpoint/path")
        return text + (f"; checkpoint {checkpoint}." if checkpoint else "; no checkpoint recorded.")

    def about(self) -> str:
        """The task and the data in one line: what was trained to tell apart, from which rows, with which model."""
        data, parts = self.hparams.get("data") or {}, []
        if data.get("source") == "glue":
            parts.append(f"GLUE task {data.get('task')} from {data.get('from')}")
        elif data.get("source") == "files":
            parts.append(f"files {data.get('train_file')} and {data.get('validation_file')}")
        elif data.get("source") == "dataset":
            parts.append(f"dataset {data.get('dataset')}")
        names = data.get("label_names") or []
        if names:
            shown = ", ".join(map(str, names[:8])) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
            parts.append(f"{len(names)} classes: {shown}")
        rows = data.get("rows") or {}
        if rows:
            parts.append(", ".join(f"{n} {split} rows" for split, n in rows.items()))
        if self.hparams.get("model"):
            parts.append(f"model {self.hparams['model']}")
        return " · ".join(parts)

    def settings(self) -> pd.DataFrame:
        """The hyperparameters that applied to this run: none that is empty, none of a tracker it did not use."""
        loggers = str(self.hparams.get("logger", "")).split(",")
        unused = tuple(p for tracker, prefixes in TRACKER_SETTINGS.items() if tracker not in loggers for p in prefixes)
        if not {"wandb", "mlflow"} & set(loggers):
            unused += ("run_group",)
        flat = {k: v for k, v in flatten(self.hparams).items() if v not in (None, "", [], "[]") and
                not k.startswith(unused) and not k.startswith("data.fingerprint")}
        return pd.DataFrame({"setting": list(flat), "value": [str(v) for v in flat.values()]})


def _table(path: str) -> pd.DataFrame:
    """A table the run logged, as it was logged (its CSV file escapes cells a spreadsheet would run)."""
    return from_spreadsheet_safe(pd.read_csv(path, keep_default_na=False))


def _yaml(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def score_groups(valid: pd.DataFrame) -> list[list[str]]:
    """The validation scores (not the loss), those equal at every validation in one group, the first named first."""
    groups: list[list[str]] = []
    for column in (c for c in valid.columns if c.startswith("valid/") and "loss" not in c):
        for group in groups:
            if valid[column].sub(valid[group[0]]).abs().max() < 1e-9:
                group.append(column)
                break
        else:
            groups.append([column])
    return groups


def _group_label(group: list[str]) -> str:
    return group[0] + (f" (= {', '.join(g.removeprefix('valid/') for g in group[1:])})" if len(group) > 1 else "")


def scores_table(run: Run) -> pd.DataFrame:
    """Each validation score (equal ones once) at the best checkpoint and at the last validation."""
    valid = run.validations
    best, last = run.best_row(), run.row_at(int(valid["step"].iloc[-1]))
    names = [*(["valid/loss"] if "valid/loss" in valid else []), *(g[0] for g in score_groups(valid))]
    labels = {g[0]: _group_label(g) for g in score_groups(valid)}
    frame = pd.DataFrame({"score": [labels.get(n, n) for n in names],
                          f"best checkpoint (step {best['step']})": [best.get(n) for n in names]})
    if last["step"] != best["step"]:
        frame[f"last validation (step {last['step']})"] = [last.get(n) for n in names]
    return frame


def _chart(title: str, series: list[tuple[pd.Series, pd.Series, str, dict]]) -> str | None:
    """A chart of (x, y, label, style) lines against the global step, as an embedded image."""
    from matplotlib.figure import Figure

    series = [s for s in series if len(s[0])]
    if not series:
        return None
    fig = Figure(figsize=(6.0, 3.4))
    ax = fig.subplots()
    for x, y, label, style in series:
        ax.plot(x, y, label=label, **style)
    ax.set(title=title, xlabel="global step (optimizer steps)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_html(fig, title)


def _column(run: Run, name: str) -> tuple[pd.Series, pd.Series]:
    data = run.metrics.dropna(subset=[name]) if name in run.metrics else run.metrics.iloc[:0]
    return data["step"], data[name] if name in data else data["step"]


def curves(runs: list[Run]) -> list[str]:
    """Losses in one chart, the validation scores in another (equal ones once), training accuracy in a third; with
    several runs, one colour a run."""
    several = len(runs) > 1
    losses, scores, accuracy = [], [], []
    for index, run in enumerate(runs):
        prefix, colour = (f"{run.name}: " if several else ""), (f"C{index}" if several else None)
        thin = {"linewidth": 0.8, "alpha": 0.5, **({"color": colour} if colour else {})}
        dots = {"marker": "o", **({"color": colour} if colour else {})}
        losses += [(*_column(run, "train/loss_step"), f"{prefix}training loss, each logged step", thin),
                   (*_column(run, "train/loss_epoch"), f"{prefix}training loss, epoch mean", dots),
                   (*_column(run, "valid/loss_epoch"), f"{prefix}validation loss",
                    {**dots, "linestyle": "--"})]
        accuracy += [(*_column(run, "train/acc_step"), f"{prefix}each logged step", thin),
                     (*_column(run, "train/acc_epoch"), f"{prefix}epoch mean", dots)]
        valid = run.validations
        groups = score_groups(valid) if not valid.empty else []
        for number, group in enumerate(groups if not several else [g for g in groups if g[0] == run.monitor]
                                       or groups[:1]):
            style = {"marker": "o", "color": colour or f"C{number}"}
            scores.append((valid["step"], valid[group[0]], f"{prefix}{_group_label(group)}", style))
    charts = [_chart("Losses", losses), _chart("Validation scores" if not several else "Monitored validation score",
                                               scores), _chart("Training accuracy", accuracy)]
    return [chart for chart in charts if chart]


def _top(run: Run) -> str:
    """The first screen of a run: scores, confusion matrix, each class."""
    step, cards = run.best_step, []
    if not run.validations.empty:
        scores = table_html(scores_table(run), f"scores-{run.id}", sortable=False)
        cards.append(f"<div class='card'><h2>Validation scores</h2>{scores}<p class='note'>"
                     f"{html.escape(SCORES_NOTE)}</p></div>")
    matrix = [f"<div class='card'><h2>Confusion matrix at step {step}</h2>",
              image_file_html(run.file("plots", CONFUSION_MATRIX, ".png"), "Confusion matrix",
                              f"confusion-image-{run.id}")]
    counts = run.file("tables", CONFUSION_MATRIX, ".csv")
    if counts:
        frame = _table(counts)
        frame = frame.set_index(frame.columns[0])  # the actual classes
        if len(frame) <= COUNTS_SHOWN:
            matrix.append("<p class='note'>Counts (rows: actual class, columns: predicted class):</p><div "
                          f"class='table-wrap'>{frame.to_html(escape=True, border=0, table_id=f'confusion-{run.id}')}"
                          "</div>")
        else:
            matrix.append(f"<p class='note'>Counts of {len(frame)} classes: "
                          f"{html.escape(os.path.relpath(counts, run.path))} (too many for a table here).</p>")
    cards.append("".join(matrix) + "</div>")
    per_class = run.file("tables", PER_CLASS, ".csv")
    if per_class:
        cards.append(f"<div class='card'><h2>Each class at step {step}</h2>"
                     f"{table_html(_table(per_class), f'per_class-{run.id}', decimals=3)}<p class='note'>support: "
                     "the class's "
                     "validation rows; precision, recall and F1 of the class against all others.</p></div>")
    return f"<div class='top'>{''.join(cards)}</div>"


def _details(run: Run) -> list[str]:
    """What follows the curves: ROC and precision-recall, the misclassified examples, the settings."""
    step, parts = run.best_step, []
    parts.append(f"<h2>ROC and precision-recall curves at step {step}</h2><div class='grid'>")
    parts.append(image_file_html(run.file("plots", ROC, ".png"), "ROC curve"))
    parts.append(image_file_html(run.file("plots", PR, ".png"), "Precision-recall curve"))
    parts.append("</div>")
    examples = run.file("tables", EXAMPLES, ".csv")
    parts.append(f"<h2>Misclassified validation examples at step {step}</h2>")
    if examples:
        frame = _table(examples)
        parts.append(f"<p class='note'>{len(frame)} rows the model got wrong. Label: the true class; Predicted: the "
                     "model's class; Probability: the probability the model gave its prediction. Click a column to "
                     "sort, type to filter.</p>")
        parts.append(table_html(frame, f"examples-{run.id}", filterable=True))
    else:
        parts.append('<p class="missing">No examples table in this run.</p>')
    settings = run.settings()
    if len(settings):
        parts.append("<h2>Settings of this run</h2>" + table_html(settings, f"hparams-{run.id}"))
    return parts


def _header(run: Run) -> list[str]:
    parts = [f"<p class='about' id='about-{run.id}'>{html.escape(run.about())}</p>"] if run.about() else []
    if run.status.get("status"):
        parts.append(f"<p class='status' id='status-{run.id}'>Run {html.escape(describe_status(run.status))}.</p>")
    parts.append(f"<p class='path'>{html.escape(os.path.abspath(run.path))}</p>")
    return parts


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
    if len(runs) == 1:
        run = runs[0]
        body = [f"<h1>Run {html.escape(run.name)}</h1>", *_header(run),
                f'<p class="headline" id="headline">{html.escape(run.headline())}</p>', _top(run),
                "<h2>Curves</h2><div class='grid'>", *curves(runs), "</div>", *_details(run)]
        return write_page(f"Run {run.name}", body, output)
    title = f"{len(runs)} runs compared"
    body = [f"<h1>{html.escape(title)}</h1>", "<ul class='headline' id='headline'>" + "".join(
        f"<li><b>{html.escape(run.name)}</b>: {html.escape(run.headline())}</li>" for run in runs) + "</ul>"]
    rows = [{"run": run.name, "monitor": run.monitor, "best step": run.best_step,
             **{k: v for k, v in run.best_row().items() if k != "step"}} for run in runs]
    body.append("<h2>Best validation of each run</h2>" + table_html(pd.DataFrame(rows), "compare"))
    differing = _differing_hparams(runs, ignore)
    body.append("<h2>Hyperparameters that differ</h2>" + (table_html(differing, "hparams-diff") if len(differing)
                                                           else "<p>None: the runs share every hyperparameter.</p>"))
    body += ["<h2>Curves</h2><div class='grid'>", *curves(runs), "</div>"]
    for run in runs:
        body += [f"<section class='run'><h2>{html.escape(run.name)}</h2>", *_header(run),
                 f"<p class='headline'>{html.escape(run.headline())}</p>", _top(run), *_details(run), "</section>"]
    return write_page(title, body, output)
