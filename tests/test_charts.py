"""models/charts.py: the confusion matrix, ROC and PR curves built once and logged through the generic verbs, and
W&B's own charts reached on the W&B backend's worker thread."""
import threading

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import (average_precision_score, confusion_matrix, precision_recall_curve, roc_auc_score,
                             roc_curve)

from models.charts import log_classification_charts
from tracking import CSVLogger, MultiLogger, NoOpLogger
from tracking.guard import GuardedLogger

NAMES = ["unacceptable", "acceptable"]
Y = [0, 0, 1, 1, 1, 0, 1, 1]
PROBS = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8], [0.7, 0.3], [0.55, 0.45], [0.1, 0.9],
                  [0.45, 0.55]])


def test_csv_files_hold_what_scikit_learn_computes(tmp_path):
    logger = CSVLogger(str(tmp_path))
    log_classification_charts(logger, Y, PROBS, NAMES, step=12)
    logger.finalize()

    counts = pd.read_csv(tmp_path / "tables" / "Confusion_Matrix-step12.csv", index_col=0)
    assert counts.index.name == "Actual" and list(counts.columns) == NAMES
    assert counts.values.tolist() == confusion_matrix(Y, PROBS.argmax(1)).tolist() == [[2, 1], [1, 4]]

    roc = pd.read_csv(tmp_path / "tables" / "roc-step12.csv")
    pr = pd.read_csv(tmp_path / "tables" / "pr-step12.csv")
    for index, name in enumerate(NAMES):
        positive = np.array(Y) == index
        fpr, tpr, _ = roc_curve(positive, PROBS[:, index])
        rows = roc[roc["class"] == name]
        assert rows["fpr"].tolist() == pytest.approx(fpr) and rows["tpr"].tolist() == pytest.approx(tpr)
        assert rows["auc"].iloc[0] == pytest.approx(roc_auc_score(positive, PROBS[:, index]))
        precision, recall, _ = precision_recall_curve(positive, PROBS[:, index])
        rows = pr[pr["class"] == name]
        assert rows["precision"].tolist() == pytest.approx(precision)
        assert rows["recall"].tolist() == pytest.approx(recall)
        assert rows["average_precision"].iloc[0] == pytest.approx(average_precision_score(positive, PROBS[:, index]))
    assert roc[roc["class"] == "acceptable"]["auc"].iloc[0] == pytest.approx(12 / 15)  # 12 of 15 pairs ranked right

    with Image.open(tmp_path / "plots" / "Confusion_Matrix-step12.png") as image:
        assert image.size == (1000, 500)  # 10 x 5 inches at 100 dpi, as the seed's figure
    for name in ("roc", "pr"):
        with Image.open(tmp_path / "plots" / f"{name}-step12.png") as image:
            assert image.size == (600, 500)


class FakeWandb(CSVLogger):
    """Named like the W&B backend: records what reaches it, and on which thread."""

    name = "wandb"

    def __init__(self, run_dir):
        super().__init__(run_dir)
        self.calls = []

    def log_dict(self, data, step):  # what the W&B backend offers for its own charts
        self.calls.append(("log_dict", threading.current_thread().name, sorted(data), step))

    def log_table(self, *args, **kwargs):
        self.calls.append(("log_table", threading.current_thread().name))

    def log_pil_image(self, *args, **kwargs):
        self.calls.append(("log_image", threading.current_thread().name))


def test_wandb_draws_its_own_charts_on_its_worker_thread_and_the_others_get_tables_and_figures(tmp_path):
    wandb = FakeWandb(str(tmp_path / "w"))
    logger = MultiLogger([GuardedLogger(CSVLogger(str(tmp_path / "c"))), GuardedLogger(wandb)])
    assert [b.name for b in logger.backends()] == ["csv", "wandb"]
    log_classification_charts(logger, Y, PROBS, NAMES, step=3)
    logger.finalize()

    # The seed's three confusion-matrix charts, then W&B's ROC and PR charts, on the backend's own thread; no table
    # of points or figure under the same keys
    assert wandb.calls == [("log_dict", "logger-wandb", ["Confusion Matrix", "cm", "conf"], 3),
                           ("log_dict", "logger-wandb", ["roc"], 3), ("log_dict", "logger-wandb", ["pr"], 3)]
    assert sorted(p.relative_to(tmp_path / "c").as_posix() for p in (tmp_path / "c").rglob("*-step3.*")) == [
        "plots/Confusion_Matrix-step3.png", "plots/pr-step3.png", "plots/roc-step3.png",
        "tables/Confusion_Matrix-step3.csv", "tables/pr-step3.csv", "tables/roc-step3.csv"]


def test_no_backend_means_nothing_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    log_classification_charts(NoOpLogger(), Y, PROBS, NAMES, step=1)
    assert list(tmp_path.iterdir()) == []
