"""What each task is scored by: GLUE's official metrics under this project's metric names, and the default
`--monitor` (the first official metric).

| task | GLUE's metric | here |
|---|---|---|
| cola | Matthews corr. | `valid/mcc` |
| mrpc, qqp | F1 / accuracy | `valid/f1_positive` (F1 of the positive class, 1), `valid/acc` |
| sst2, mnli (matched), qnli, rte, wnli | accuracy | `valid/acc` |

Files and datasets: `valid/mcc` for two classes (it weighs both classes, so a majority-class predictor scores 0
however unbalanced the data), `valid/acc` for more.
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


def official_metrics(task: str | None, num_labels: int) -> tuple[str, ...]:
    """The metrics a task is judged by, the first one the default `--monitor`. `task` None: a file or dataset."""
    if task is not None:
        return OFFICIAL_METRICS[task]
    return ("valid/mcc",) if num_labels == 2 else ("valid/acc",)
