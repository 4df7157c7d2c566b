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
    def monitor(self) -> str | None:
        """The metric the run chose its best checkpoint by, as the run recorded it (summary, else hyperparameters)."""
        return self.summary.get("checkpoint/monitor") or self.hparams.get("monitor")

    @property
    def best_step(self) -> int | None:
        """The step of the saved best checkpoint, else of the best value of the run's monitored metric, else the
        last validation."""
        if "checkpoint/step" in self.summary:
            return int(self.summary["checkpoint/step"])
        valid = self.validations
        if valid.empty:
            return None
        column = next((c for c in (self.monitor, f"{self.monitor}_epoch") if c and c in valid), None)
        if column and valid[column].notna().any():
            minimise = self.hparams.get("monitor_mode", "min" if "loss" in column else "max") == "min"
            return int(valid.loc[valid[column].idxmin() if minimise else valid[column].idxmax(), "step"])
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
    if not run.summary.get("checkpoint/path"):
        parts.append(f"<p>No checkpoint recorded; figures below are from the best validation by "
                     f"{html.escape(str(run.monitor or 'step (the last)'))}.</p>")
    best = run.best_row()
    if best:
        parts.append(f"<h3>Validation at step {step}</h3>")
        parts.append(_table(pd.DataFrame([best]), f"best-{_id(run)}", sortable=False))
    parts.append(f"<h3>Confusion matrix, ROC and precision-recall at step {step}</h3><div class='grid'>")
    parts.append(_img_file(run.file("plots", "Confusion_Matrix", ".png"), "Confusion matrix"))
    parts.append(_img_file(run.file("plots", "roc", ".png"), "ROC curve"))
    parts.append(_img_file(run.file("plots", "pr", ".png"), "Precision-recall curve"))
    parts.append("</div>")
    counts = run.file("tables", "Confusion_Matrix", ".csv")
    if counts:
        frame = pd.read_csv(counts, index_col=0, keep_default_na=False)
        parts.append("<p>Counts (rows: actual, columns: predicted):</p>" +
                     frame.to_html(escape=True, border=0, table_id=f"confusion-{_id(run)}"))
    for key, path in run.tables_at_best().items():
        if key in ("examples", "Confusion_Matrix"):
            continue
        parts.append(f"<h3>{html.escape(key)} at step {step}</h3>")
        parts.append(_table(pd.read_csv(path, keep_default_na=False), f"{_safe(key)}-{_id(run)}"))
    examples = run.file("tables", "examples", ".csv")
    parts.append(f"<h3>Misclassified validation examples at step {step}</h3>")
    if examples:
        frame = pd.read_csv(examples, keep_default_na=False)
        parts.append(f"<p>{len(frame)} examples. Click a column to sort.</p>")
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
    return _safe(run.name)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)


NOT_COMPARED = ("run_name", "output_dir", "git_commit", "config", "resume")


def _differing_hparams(runs: list[Run]) -> pd.DataFrame:
    """One row per hyperparameter whose value is not the same in every run, one column per run."""
    flat = [pd.json_normalize(run.hparams, sep=".").iloc[0].to_dict() if run.hparams else {} for run in runs]
    keys = [k for k in dict.fromkeys(k for f in flat for k in f) if not k.startswith(NOT_COMPARED)]
    rows = [{"hyperparameter": k, **{run.name: str(f.get(k, "")) for run, f in zip(runs, flat)}} for k in keys
            if len({str(f.get(k, "")) for f in flat}) > 1]
    return pd.DataFrame(rows, columns=["hyperparameter", *(run.name for run in runs)])


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
section.run { border-top: 2px solid #ccc; margin-top: 2rem; } .headline { font-size: 1.15em; font-weight: 600; }
"""


def build_report(run_dirs: list[str], output: str) -> str:
    """Write the report for `run_dirs` to `output` (atomically) and return its path."""
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
        body.append("<h2>Best validation of each run</h2>" + _table(pd.DataFrame(rows), "compare"))
        differing = _differing_hparams(runs)
        body.append("<h2>Hyperparameters that differ</h2>" + (_table(differing, "hparams-diff") if len(differing)
                                                               else "<p>None: the runs share every hyperparameter.</p>"))
    body.append("<h2>Curves</h2><div class='grid'>")
    for metric, label in TRAIN_CURVES + [(m, m) for m in _validation_metrics(runs)]:
        image = _curves(runs, metric, label)
        if image:
            body.append(image)
    body.append("</div>")
    body.extend(_run_section(run, heading=len(runs) > 1) for run in runs)
    return write_page(title, body, output)


# For other pages built on this one's look (scripts/sweep.py's sweep report): what they pass is generic, tables and
# figures, never a run's meaning.
figure_html = _png  # a matplotlib Figure as an embedded <img>
table_html = _table  # a DataFrame as a table, sortable by a click on a column


def write_page(title: str, body: list[str], output: str) -> str:
    """A self-contained HTML page of `body` (HTML fragments) with this report's style and its sorting/filtering
    script, written atomically to `output`; returns the path."""
    document = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                f"<style>{STYLE}</style></head><body>{''.join(body)}<script>{SCRIPT}</script></body></html>")
    tmp = f"{output}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(document)
    os.replace(tmp, output)
    return output
