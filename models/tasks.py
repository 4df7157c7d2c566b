"""Task policy: what each task is scored by (GLUE's official metrics under this project's metric names, the first one
the default `--monitor`), which metrics may be monitored, and what the classifier must know of the data.

| task | GLUE's metric | here |
|---|---|---|
| cola | Matthews corr. | `valid/mcc` |
| mrpc, qqp | F1 / accuracy | `valid/f1_positive` (F1 of the positive class, 1), `valid/acc` |
| sst2, mnli (matched), qnli, rte, wnli | accuracy | `valid/acc` |

Files and datasets: `valid/mcc` for two classes (it weighs both classes, so a majority-class predictor scores 0
however unbalanced the data), `valid/acc` for more.

A data source here is anything with `kind` ("glue", "files", "dataset"), `task` and `label_names` (data.DataSource).
"""
from __future__ import annotations

OFFICIAL_METRICS = {
    "cola": ("valid/mcc",),
    "mrpc": ("valid/f1_positive", "valid/acc"),
    "qqp": ("valid/f1_positive", "valid/acc"),
    "sst2": ("valid/acc",),
    "mnli": ("valid/acc",),
    "qnli": ("valid/acc",),
    "rte": ("valid/acc",),
    "wnli": ("valid/acc",),
}


class MonitorError(ValueError):
    """A metric to monitor that the model never logs."""


def official_metrics(source) -> tuple[str, ...]:
    """The metrics the source's task is judged by; the first one is the default --monitor."""
    if source.kind == "glue":
        return OFFICIAL_METRICS[source.task]
    return ("valid/mcc",) if len(source.label_names) == 2 else ("valid/acc",)


def monitorable(source) -> list[str]:
    """Every metric the classifier logs by the time a validation ends for this source, what --monitor may name."""
    from models.classifier import METRICS

    return list(dict.fromkeys([*METRICS, *official_metrics(source)]))


def check_monitor(metric: str, source, flag: str = "--monitor") -> None:
    """`metric` (or its `_epoch` form) is one the classifier logs; else a MonitorError naming `flag`."""
    allowed = monitorable(source)
    if metric.removesuffix("_epoch") not in allowed:
        raise MonitorError(f"{flag} {metric!r} is not a metric this model logs; choose from {', '.join(allowed)}")


def model_options(source) -> dict:
    """What the classifier needs to know of the data: its class names, and whether to log the positive class's F1."""
    return {"label_names": list(source.label_names), "f1_positive": "valid/f1_positive" in official_metrics(source)}


def best_score_modes(source, monitor: str, mode: str) -> dict[str, str]:
    """What `BestScores` keeps for the summary: valid/loss, the task's official metrics, and the monitored metric."""
    modes = {"valid/loss": "min", **dict.fromkeys(official_metrics(source), "max")}
    modes.setdefault(monitor, mode)
    return modes
