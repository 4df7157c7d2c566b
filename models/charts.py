"""The charts of a classifier's validation, built once above the trackers: the confusion matrix (a counts table and
the seed's seaborn heatmap), ROC and precision-recall curves (tables of points and figures).

Every backend gets them through the generic `log_table` and `log_image`, under the keys `Confusion Matrix`, `roc`
and `pr` (the CSV backend writes `tables/roc-step<N>.csv` and `plots/roc-step<N>.png`, and so on). W&B draws its own
interactive charts instead, under the seed's keys: `conf` (wandb.plot), `cm` (wandb's scikit-learn chart),
`Confusion Matrix` (the heatmap as an image), `roc` and `pr`; `wandb_charts` picks among the first three. That code
(`_wandb_charts`) is handed to the W&B backend with `submit`, so it runs on the backend's own worker thread, bounded
by its failure guard, like every other logging call.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from tracking.files import image_to_pil

CONFUSION_MATRIX, ROC, PR = "Confusion Matrix", "roc", "pr"
PER_CLASS = "per_class"  # the table of each class's precision, recall, F1 and support (models/classifier.py)
NATIVE_CHARTS = "wandb"  # the backend that draws these charts itself
# Charts that grow with the number of classes are drawn so that they stay readable and take seconds, whatever the
# number: a count in each cell of the heatmap up to ANNOTATED classes (a thousand classes once took ten minutes and
# 10 GB), a curve per class up to PER_CLASS_CURVES classes (beyond: one micro-averaged curve, its table a few thousand
# points rather than classes x rows), W&B's own interactive charts up to NATIVE classes (beyond: the same images
# and tables as every backend).
ANNOTATED, PER_CLASS_CURVES, NATIVE = 20, 20, 20
# The seed's three confusion-matrix charts in W&B (`--confusion-matrix`): method 1, 2 and 3 of the post.
WANDB_CONFUSION_CHARTS = ("wandb", "sklearn", "seaborn")


def confusion_matrix_frame(y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]) -> pd.DataFrame:
    """Counts with actual classes as rows and predicted classes as columns, every class present."""
    from sklearn.metrics import confusion_matrix

    counts = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=list(range(len(class_names))))
    frame = pd.DataFrame(counts, index=list(class_names), columns=list(class_names))
    frame.index.name = "Actual"
    frame.columns.name = "Predicted"
    return frame


def confusion_matrix_figure(frame: pd.DataFrame):
    """A heatmap of `confusion_matrix_frame` output (the seed's seaborn heatmap, a count in every cell); beyond
    `ANNOTATED` classes an image of the counts without numbers, and class names only where they fit. A bare Figure,
    so no pyplot state or GUI backend is touched."""
    from matplotlib.figure import Figure

    n = len(frame)
    if n <= ANNOTATED:
        import seaborn as sns

        fig = Figure(figsize=(10, 5))
        ax = fig.subplots()
        sns.heatmap(frame, cmap="Blues", annot=True, annot_kws={"size": 16 if n <= 4 else 9}, fmt="d", ax=ax)
    else:
        fig = Figure(figsize=(8, 7))
        ax = fig.subplots()
        image = ax.imshow(frame.to_numpy(), cmap="Blues", interpolation="nearest", aspect="auto")
        fig.colorbar(image, ax=ax)
        ticks = range(0, n, max(1, n // 40))  # at most 40 names an axis
        ax.set_xticks(list(ticks), [str(frame.columns[i]) for i in ticks], rotation=90, fontsize=6)
        ax.set_yticks(list(ticks), [str(frame.index[i]) for i in ticks], fontsize=6)
        ax.set(xlabel="Predicted", ylabel="Actual", title=f"Confusion matrix, {n} classes")
    fig.tight_layout()
    return fig


def _one_vs_rest(y_true, probs, class_names):
    """(name, is that class, its probability) per class, or one micro-averaged curve over every (row, class) pair
    beyond `PER_CLASS_CURVES` classes."""
    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=float)
    if len(class_names) <= PER_CLASS_CURVES:
        return [(name, y_true == index, probs[:, index]) for index, name in enumerate(class_names)]
    onehot = np.zeros_like(probs, dtype=bool)
    onehot[np.arange(len(y_true)), y_true] = True
    return [(f"micro-average of {len(class_names)} classes", onehot.ravel(), probs.ravel())]


def _thin(curve, points: int = 2000):
    """A curve's arrays with at most `points` points, its first and last kept (what a chart or a table can show)."""
    n = len(curve[0])
    if n <= points:
        return curve
    keep = np.unique(np.linspace(0, n - 1, points).round().astype(int))
    return tuple(np.asarray(a)[keep[keep < len(a)]] for a in curve)


def roc_curve_frame(y_true: Sequence[int], probs, class_names: Sequence[str]) -> pd.DataFrame:
    """One-vs-rest ROC points per class (or micro-averaged, see `_one_vs_rest`): class, fpr, tpr, threshold, auc."""
    import warnings

    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import auc, roc_curve

    frames = []
    for name, positive, scores in _one_vs_rest(y_true, probs, class_names):
        with warnings.catch_warnings():  # a class with no validation row: no curve (said once, by the classifier)
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            fpr, tpr, thresholds = _thin(roc_curve(positive, scores))
        area = auc(fpr, tpr) if len(fpr) > 1 and positive.any() else float("nan")
        frames.append(pd.DataFrame({"class": name, "fpr": fpr, "tpr": tpr, "threshold": thresholds, "auc": area}))
    return pd.concat(frames, ignore_index=True)


def pr_curve_frame(y_true: Sequence[int], probs, class_names: Sequence[str]) -> pd.DataFrame:
    """One-vs-rest precision-recall points per class (or micro-averaged): class, recall, precision,
    average_precision."""
    import warnings

    from sklearn.exceptions import UndefinedMetricWarning
    from sklearn.metrics import average_precision_score, precision_recall_curve

    frames = []
    for name, positive, scores in _one_vs_rest(y_true, probs, class_names):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (UndefinedMetricWarning, UserWarning, RuntimeWarning))
            # scikit-learn's points exactly, but for a micro-average over many classes: then the corners only
            precision, recall, _ = _thin(precision_recall_curve(positive, scores,
                                                                drop_intermediate=len(class_names) > PER_CLASS_CURVES))
            ap = average_precision_score(positive, scores) if positive.any() else float("nan")
        frames.append(pd.DataFrame({"class": name, "recall": recall, "precision": precision, "average_precision": ap}))
    return pd.concat(frames, ignore_index=True)


AXIS_NAMES = {"fpr": "false positive rate", "tpr": "true positive rate (recall)", "recall": "recall",
              "precision": "precision"}


def curve_figure(frame: pd.DataFrame, x: str, y: str, score: str, score_label: str, title: str,
                 diagonal: bool = False):
    """One line per class of a `roc_curve_frame` or `pr_curve_frame`, the class's area score in the legend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    for name, curve in frame.groupby("class", sort=False):
        ax.plot(curve[x], curve[y], label=f"{name} ({score_label} {curve[score].iloc[0]:.3f})")
    if diagonal:
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    ax.set(xlabel=AXIS_NAMES[x], ylabel=AXIS_NAMES[y], title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right" if diagonal else "lower left")
    fig.tight_layout()
    return fig


def roc_figure(frame: pd.DataFrame):
    return curve_figure(frame, "fpr", "tpr", "auc", "AUC", "ROC curve", diagonal=True)


def pr_figure(frame: pd.DataFrame):
    return curve_figure(frame, "recall", "precision", "average_precision", "AP", "Precision-recall curve")


def _wandb_charts(backend, y_true, y_pred, probs, names, step, heatmap, confusion_charts) -> None:
    """W&B's own charts, run on the W&B backend's thread (`submit`): the confusion matrix by the seed's methods
    (`conf`: wandb.plot, `cm`: wandb's scikit-learn integration, `heatmap`: the seaborn figure as an image),
    `wandb.plot.roc_curve` and `wandb.plot.pr_curve`."""
    import wandb

    y_true, y_pred, probs = [int(v) for v in y_true], [int(v) for v in y_pred], [list(map(float, r)) for r in probs]
    charts = {}
    if "wandb" in confusion_charts:
        charts["conf"] = wandb.plot.confusion_matrix(probs=probs, y_true=y_true, class_names=names)
    if "sklearn" in confusion_charts:
        # wandb.sklearn.plot_confusion_matrix logs the chart itself, without our x-axis; build it and log it here.
        from wandb.integration.sklearn import calculate

        charts["cm"] = calculate.confusion_matrix(y_true, y_pred, names, None, None, False)
    if "seaborn" in confusion_charts:
        charts[CONFUSION_MATRIX] = wandb.Image(image_to_pil(heatmap))
    if charts:
        backend.log_dict(charts, step)
    backend.log_dict({ROC: wandb.plot.roc_curve(y_true, probs, labels=names)}, step)
    backend.log_dict({PR: wandb.plot.pr_curve(y_true, probs, labels=names)}, step)


def log_classification_charts(logger, y_true: Sequence[int], probs, class_names: Sequence[str], step: int,
                              wandb_charts: Sequence[str] = WANDB_CONFUSION_CHARTS) -> None:
    """Log the confusion matrix, ROC and precision-recall curves of labels `y_true` against `probs` (N x classes
    predicted probabilities; the prediction is their argmax) to every backend of `logger`, at `step`.
    `wandb_charts`: which of the seed's confusion-matrix charts W&B draws (see `WANDB_CONFUSION_CHARTS`)."""
    y_true, probs = np.asarray(y_true).astype(int), np.asarray(probs, dtype=float)
    y_pred, names = probs.argmax(-1), list(class_names)
    counts = confusion_matrix_frame(y_true, y_pred, names)
    roc, pr = roc_curve_frame(y_true, probs, names), pr_curve_frame(y_true, probs, names)
    for backend in logger.backends():
        if backend.name == NATIVE_CHARTS and len(names) <= NATIVE:
            backend.submit(_wandb_charts, y_true.tolist(), y_pred.tolist(), probs.tolist(), names, step,
                           confusion_matrix_figure(counts) if "seaborn" in wandb_charts else None, tuple(wandb_charts))
            continue
        # A Figure of its own for each backend: each draws its figures on its own thread.
        backend.log_table(CONFUSION_MATRIX, counts.reset_index(), step)
        backend.log_image(CONFUSION_MATRIX, confusion_matrix_figure(counts), step)
        backend.log_table(ROC, roc, step)
        backend.log_image(ROC, roc_figure(roc), step)
        backend.log_table(PR, pr, step)
        backend.log_image(PR, pr_figure(pr), step)
