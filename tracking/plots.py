"""Figures several backends share: the confusion matrix as a seaborn heatmap (the seed's method 3)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd


def confusion_matrix_frame(y_true: Sequence[int], y_pred: Sequence[int], class_names: Sequence[str]) -> pd.DataFrame:
    """Counts with actual classes as rows and predicted classes as columns, every class present."""
    from sklearn.metrics import confusion_matrix

    counts = confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=list(range(len(class_names))))
    frame = pd.DataFrame(counts, index=list(class_names), columns=list(class_names))
    frame.index.name = "Actual"
    frame.columns.name = "Predicted"
    return frame


def confusion_matrix_figure(frame: pd.DataFrame):
    """A heatmap of `confusion_matrix_frame` output; a bare Figure, so no pyplot state or GUI backend is touched."""
    import seaborn as sns
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 5))
    ax = fig.subplots()
    sns.heatmap(frame, cmap="Blues", annot=True, annot_kws={"size": 16}, fmt="d", ax=ax)
    fig.tight_layout()
    return fig


def roc_curve_frame(y_true: Sequence[int], probs, class_names: Sequence[str]) -> pd.DataFrame:
    """One-vs-rest ROC points per class: class, fpr, tpr, threshold, auc."""
    from sklearn.metrics import auc, roc_curve

    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=float)
    frames = []
    for index, name in enumerate(class_names):
        fpr, tpr, thresholds = roc_curve(y_true == index, probs[:, index])
        area = auc(fpr, tpr) if len(fpr) > 1 else float("nan")
        frames.append(pd.DataFrame({"class": name, "fpr": fpr, "tpr": tpr, "threshold": thresholds, "auc": area}))
    return pd.concat(frames, ignore_index=True)


def pr_curve_frame(y_true: Sequence[int], probs, class_names: Sequence[str]) -> pd.DataFrame:
    """One-vs-rest precision-recall points per class: class, recall, precision, average_precision."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=float)
    frames = []
    for index, name in enumerate(class_names):
        precision, recall, _ = precision_recall_curve(y_true == index, probs[:, index])
        ap = average_precision_score(y_true == index, probs[:, index])
        frames.append(pd.DataFrame({"class": name, "recall": recall, "precision": precision, "average_precision": ap}))
    return pd.concat(frames, ignore_index=True)


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
    ax.set(xlabel=x, ylabel=y, title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(loc="lower right" if diagonal else "lower left")
    fig.tight_layout()
    return fig


def image_to_pil(image):
    """A matplotlib Figure, PIL image or uint8 array as a PIL image."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if hasattr(image, "savefig"):
        import io

        buffer = io.BytesIO()
        image.savefig(buffer, format="png")
        buffer.seek(0)
        return Image.open(buffer).convert("RGBA")
    return Image.fromarray(np.asarray(image))
