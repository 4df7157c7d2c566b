"""The TensorBoard backend (`pip install -e ".[tensorboard]"`): scalars under the same names as metrics.csv, images
and figures, tables as text, and the hyperparameters in the HParams view. Event files go to `<run_dir>/tensorboard/`;
`tensorboard --logdir runs/` shows every run.

The HParams view lists, next to the hyperparameters, every scalar the run logs: only the session's hyperparameters
are written, and TensorBoard then takes the metric columns from the run's scalars (no metric is named here)."""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

from tracking.base import ExperimentLogger, flatten


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

        # The session's hyperparameters only: with no experiment summary declaring metrics, the HParams view shows
        # every scalar tag of the run as a metric.
        _, session_start, _ = hparams(flatten(dict(params)), {})
        self.writer.file_writer.add_summary(session_start)

    def log_metrics(self, metrics, step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, float(value), int(step))
        self.writer.flush()

    def log_table(self, key: str, dataframe: pd.DataFrame, step: int) -> None:
        self.writer.add_text(key, dataframe.to_markdown(index=False), int(step))

    def log_pil_image(self, key: str, image, step: int) -> None:
        pixels = np.asarray(image.convert("RGB"))
        self.writer.add_image(key, pixels, int(step), dataformats="HWC")

    def log_summary(self, values) -> None:
        rows = pd.DataFrame({"name": list(values), "value": [str(v) for v in values.values()]})
        self.writer.add_text("summary", rows.to_markdown(index=False))

    def log_artifact(self, path: str, name: str, type: str = "model", aliases=()) -> None:
        self.writer.add_text("artifacts", f"{name} ({type}, {', '.join(aliases)}): `{os.path.abspath(path)}`")

    def finalize(self, status: str = "success") -> None:
        self.writer.close()
