"""The TensorBoard backend (`pip install -e ".[tensorboard]"`): scalars under the same names as metrics.csv,
images for the confusion matrix and ROC curve, TensorBoard's own precision-recall curve, tables as text, and the
hyperparameters in the HParams view. Event files go to `<run_dir>/tensorboard/`; `tensorboard --logdir runs/`
shows every run."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from tracking.base import ExperimentLogger
from tracking.plots import confusion_matrix_figure, confusion_matrix_frame, curve_figure, image_to_pil, roc_curve_frame
from tracking.secrets import scrub

HPARAM_METRICS = ("valid/mcc", "valid/acc", "valid/loss_epoch")


def _flat(params: dict, prefix: str = "") -> dict:
    """Nested hyperparameters as `a.b` keys with the scalar types the HParams plugin accepts."""
    flat = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


class TensorBoardLogger(ExperimentLogger):
    name = "tensorboard"

    def __init__(self, run_dir: str) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.writer = SummaryWriter(log_dir=os.path.join(run_dir, "tensorboard"))

    @property
    def experiment(self):
        return self.writer

    @property
    def log_dir(self) -> str:
        return self.writer.log_dir

    def log_hyperparams(self, params) -> None:
        from torch.utils.tensorboard.summary import hparams

        # Declares which scalar tags the HParams view shows next to the hyperparameters (as Lightning does).
        experiment, start, end = hparams(_flat(scrub(dict(params))), {m: 0.0 for m in HPARAM_METRICS})
        for summary in (experiment, start, end):
            self.writer.file_writer.add_summary(summary)

    def log_metrics(self, metrics, step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, float(value), int(step))
        self.writer.flush()

    def log_table(self, key: str, dataframe: pd.DataFrame, step: int) -> None:
        self.writer.add_text(key, dataframe.to_markdown(index=False), int(step))

    def log_image(self, key: str, image, step: int) -> None:
        pixels = np.asarray(image_to_pil(image).convert("RGB"))
        self.writer.add_image(key, pixels, int(step), dataformats="HWC")

    def log_confusion_matrix(self, key, y_true, y_pred, class_names, step, probs=None) -> None:
        frame = confusion_matrix_frame(y_true, y_pred, class_names)
        self.log_image(key, confusion_matrix_figure(frame), step)
        self.writer.add_text(key, frame.reset_index().to_markdown(index=False), int(step))

    def log_roc_curve(self, key, y_true, probs, class_names, step) -> None:
        frame = roc_curve_frame(y_true, probs, class_names)
        self.log_image(key, curve_figure(frame, "fpr", "tpr", "auc", "AUC", "ROC curve", diagonal=True), step)

    def log_pr_curve(self, key, y_true, probs, class_names, step) -> None:
        y_true, probs = np.asarray(y_true), np.asarray(probs, dtype=float)
        for index, name in enumerate(class_names):
            self.writer.add_pr_curve(f"{key}/{name}", y_true == index, probs[:, index], int(step))

    def log_summary(self, values) -> None:
        rows = pd.DataFrame({"name": list(values), "value": [str(v) for v in values.values()]})
        self.writer.add_text("summary", rows.to_markdown(index=False))

    def log_artifact(self, path: str, name: str, type: str = "model", aliases=()) -> None:
        self.writer.add_text("artifacts", f"{name} ({type}, {', '.join(aliases)}): `{os.path.abspath(path)}`")

    def finalize(self, status: str = "success") -> None:
        self.writer.close()
