"""A self-contained HTML report of one or more CSV-backend run folders: curves, the best epoch's confusion matrix,
ROC and precision-recall curves, the misclassified examples (sortable, filterable), hyperparameters and the best
checkpoint. Images are embedded as data URIs and the little JavaScript is inline, so the file opens with no network.

Reads only what `tracking.csv_logger.CSVLogger` writes; knows nothing of how the run was trained.
"""
from __future__ import annotations

import base64
import html
import io
import os
import re
from dataclasses import dataclass, field

import pandas as pd
import yaml

TRAIN_CURVES = [("train/loss", "Training loss"), ("train/acc", "Training accuracy")]


@dataclass
class Run:
    path: str
    name: str
    metrics: pd.DataFrame
    hparams: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str) -> "Run":
        metrics_path = os.path.join(path, "metrics.csv")
        if not os.path.isfile(metrics_path):
            raise FileNotFoundError(f"{path}: not a run folder (no metrics.csv); pass folders that train.py wrote")
        return cls(path=path, name=os.path.basename(os.path.normpath(path)), metrics=pd.read_csv(metrics_path),
                   hparams=_yaml(os.path.join(path, "hparams.yaml")), summary=_yaml(os.path.join(path, "summary.yaml")))

    @property
    def validations(self) -> pd.DataFrame:
        cols = [c for c in self.metrics.columns if c.startswith("valid/") and not c.endswith("_step")]
        return self.metrics.dropna(subset=cols, how="all")[["epoch", "step", *cols]] if cols else pd.DataFrame()

    @property
    def best_step(self) -> int | None:
        """The step of the saved best checkpoint, else of the best valid/mcc, else the last validation."""
        if "checkpoint/step" in self.summary:
            return int(self.summary["checkpoint/step"])
        valid = self.validations
        if valid.empty:
            return None
        if "valid/mcc" in valid:
            return int(valid.loc[valid["valid/mcc"].idxmax(), "step"])
        return int(valid["step"].iloc[-1])

    def file(self, folder: str, key: str, suffix: str) -> str | None:
        step = self.best_step
        path = os.path.join(self.path, folder, f"{key}-step{step}{suffix}")
        return path if step is not None and os.path.isfile(path) else None

    def best_row(self) -> dict:
        valid = self.validations
        if valid.empty:
            return {}
        row = valid[valid["step"] == self.best_step]
        return (row.iloc[-1] if len(row) else valid.iloc[-1]).dropna().to_dict()


def _yaml(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return _img(buffer.getvalue(), "png")


def _img(data: bytes, kind: str, alt: str = "") -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/{kind};base64,{base64.b64encode(data).decode()}">'


def _img_file(path: str | None, alt: str) -> str:
    if path is None:
        return f'<p class="missing">{html.escape(alt)}: not logged in this run.</p>'
    with open(path, "rb") as f:
        return _img(f.read(), "png", alt)


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
    return _png(fig)


def _table(frame: pd.DataFrame, table_id: str, sortable: bool = True, filterable: bool = False) -> str:
    table = frame.to_html(index=False, escape=True, table_id=table_id, border=0,
                          classes="sortable" if sortable else "", float_format=lambda v: f"{v:.4f}", na_rep="")
    if filterable:
        return (f'<input class="filter" data-table="{table_id}" placeholder="Filter rows..." type="search">'
                f'<span class="count" id="{table_id}-count"></span>{table}')
    return table


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
             f'<p class="path">{html.escape(os.path.abspath(run.path))}</p>']
    step = run.best_step
    checkpoint = run.summary.get("checkpoint/path")
    parts.append("<h3>Best checkpoint</h3>")
    if checkpoint:
        parts.append(f"<p><code>{html.escape(str(checkpoint))}</code>, {html.escape(str(run.summary.get('checkpoint/monitor')))}"
                     f" = {float(run.summary.get('checkpoint/score', float('nan'))):.4f} at step {step}.</p>")
    else:
        parts.append("<p>No checkpoint recorded; figures below are from the best validation by valid/mcc.</p>")
    best = run.best_row()
    if best:
        parts.append(_table(pd.DataFrame([best]), f"best-{_id(run)}", sortable=False))
    parts.append(f"<h3>Confusion matrix, ROC and precision-recall at step {step}</h3><div class='grid'>")
    parts.append(_img_file(run.file("plots", "Confusion_Matrix", ".png"), "Confusion matrix"))
    parts.append(_img_file(run.file("plots", "roc", ".png"), "ROC curve"))
    parts.append(_img_file(run.file("plots", "pr", ".png"), "Precision-recall curve"))
    parts.append("</div>")
    examples = run.file("tables", "examples", ".csv")
    parts.append(f"<h3>Misclassified dev sentences at step {step}</h3>")
    if examples:
        frame = pd.read_csv(examples, keep_default_na=False)
        parts.append(f"<p>{len(frame)} sentences. Click a column to sort.</p>")
        parts.append(_table(frame, f"examples-{_id(run)}", filterable=True))
    else:
        parts.append('<p class="missing">No examples table in this run.</p>')
    if run.hparams:
        flat = pd.json_normalize(run.hparams, sep=".").T.reset_index()
        flat.columns = ["hyperparameter", "value"]
        parts.append("<h3>Hyperparameters</h3>" + _table(flat.astype(str), f"hparams-{_id(run)}"))
    parts.append("</section>")
    return "\n".join(parts)


def _id(run: Run) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", run.name)


SCRIPT = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('thead th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var ascending = th.dataset.order !== 'asc';
      rows.sort(function (a, b) {
        var x = a.cells[column].textContent, y = b.cells[column].textContent;
        var nx = parseFloat(x), ny = parseFloat(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return ascending ? c : -c;
      });
      rows.forEach(function (row) { body.appendChild(row); });
      table.querySelectorAll('thead th').forEach(function (h) { delete h.dataset.order; });
      th.dataset.order = ascending ? 'asc' : 'desc';
    });
  });
});
document.querySelectorAll('input.filter').forEach(function (input) {
  var table = document.getElementById(input.dataset.table), count = document.getElementById(input.dataset.table + '-count');
  function apply() {
    var needle = input.value.toLowerCase(), shown = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var keep = row.textContent.toLowerCase().indexOf(needle) !== -1;
      row.style.display = keep ? '' : 'none';
      if (keep) { shown += 1; }
    });
    count.textContent = ' ' + shown + ' shown';
  }
  input.addEventListener('input', apply);
  apply();
});
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
h1 { margin-bottom: 0; } .path { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.6rem; text-align: left; }
table.sortable th { cursor: pointer; background: #f3f3f3; }
th[data-order=asc]::after { content: ' \\25B2'; } th[data-order=desc]::after { content: ' \\25BC'; }
.grid { display: flex; flex-wrap: wrap; gap: 1rem; } .grid img { max-width: 100%; height: auto; }
img { max-width: 100%; } .missing { color: #a33; } input.filter { padding: 0.3rem; width: 20rem; }
section.run { border-top: 2px solid #ccc; margin-top: 2rem; }
"""


def build_report(run_dirs: list[str], output: str) -> str:
    """Write the report for `run_dirs` to `output` (atomically) and return its path."""
    runs = [Run.load(path) for path in run_dirs]
    title = f"CoLA run {runs[0].name}" if len(runs) == 1 else f"{len(runs)} CoLA runs compared"
    body = [f"<h1>{html.escape(title)}</h1>"]
    if len(runs) > 1:
        rows = [{"run": run.name, "best step": run.best_step, **run.best_row()} for run in runs]
        body.append("<h2>Best validation of each run</h2>" + _table(pd.DataFrame(rows), "compare"))
    body.append("<h2>Curves</h2><div class='grid'>")
    for metric, label in TRAIN_CURVES + [(m, m) for m in _validation_metrics(runs)]:
        image = _curves(runs, metric, label)
        if image:
            body.append(image)
    body.append("</div>")
    body.extend(_run_section(run, heading=len(runs) > 1) for run in runs)
    document = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{STYLE}</style></head><body>{''.join(body)}<script>{SCRIPT}</script></body></html>")
    tmp = f"{output}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(document)
    os.replace(tmp, output)
    return output
