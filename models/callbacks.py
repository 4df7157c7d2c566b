"""CoLA-specific callbacks: the seed's `SamplesVisualisationLogger`."""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from trainer import Callback


class SamplesVisualisationLogger(Callback):
    """After every validation, log a table of the misclassified dev sentences (Sentence, Label, Predicted,
    Probability of the prediction) as `examples`, at the current global step.

    Works from what `validation_step` returned (`idx`, `labels`, `logits`, gathered from every process), so it
    covers the whole dev set without a second forward pass. `max_rows` caps the table (None: no cap)."""

    def __init__(self, sentences: Sequence[str], key: str = "examples", max_rows: int | None = None) -> None:
        self.sentences, self.key, self.max_rows = list(sentences), key, max_rows
        self._outputs: list[dict] = []

    def on_validation_epoch_start(self, trainer, module):
        self._outputs = []

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._outputs.append({k: outputs[k].detach().cpu() for k in ("idx", "labels", "logits")})

    def misclassified(self) -> pd.DataFrame:
        if not self._outputs:
            return pd.DataFrame(columns=["Sentence", "Label", "Predicted", "Probability"])
        idx = torch.cat([o["idx"] for o in self._outputs])
        labels = torch.cat([o["labels"] for o in self._outputs])
        probs = torch.cat([o["logits"] for o in self._outputs]).float().softmax(-1)
        preds = probs.argmax(-1)
        frame = pd.DataFrame({
            "idx": idx.numpy(),
            "Sentence": [self.sentences[i] for i in idx.tolist()],
            "Label": labels.numpy(),
            "Predicted": preds.numpy(),
            "Probability": probs.max(-1).values.numpy().round(4),
        })
        wrong = frame[frame["Label"] != frame["Predicted"]].sort_values("idx").drop(columns="idx")
        return wrong.head(self.max_rows).reset_index(drop=True) if self.max_rows else wrong.reset_index(drop=True)

    def on_validation_end(self, trainer, module):
        trainer.logger.log_table(self.key, self.misclassified(), step=trainer.global_step)
