"""Task-specific callbacks: `MisclassifiedExamples`, the seed's `SamplesVisualisationLogger`."""
from __future__ import annotations

from typing import Sequence

import pandas as pd
import torch

from trainer import Callback

EXAMPLES = "examples"  # the table's key, as in the seed


class MisclassifiedExamples(Callback):
    """After every validation, log a table of the misclassified dev rows (Sentence, `Sentence 2` for a pair task,
    Label and Predicted as class names, Probability of the prediction) as `examples`, at the current global step.

    Works from what `validation_step` returned (`idx`, `labels`, `logits`, gathered from every process), so it
    covers the whole dev set without a second forward pass. `max_rows` caps the table (None: no cap). `label_names`:
    the class names in id order (default: the module's `label_names`)."""

    def __init__(self, sentences: Sequence[str], key: str = EXAMPLES, max_rows: int | None = None,
                 pairs: Sequence[str] | None = None, label_names: Sequence[str] | None = None) -> None:
        self.sentences, self.key, self.max_rows = list(sentences), key, max_rows
        self.pairs = list(pairs) if pairs is not None else None
        self.label_names = list(label_names) if label_names is not None else None
        self._outputs: list[dict] = []

    def on_validation_epoch_start(self, trainer, module):
        self._outputs = []
        if self.label_names is None and getattr(module, "label_names", None):
            self.label_names = list(module.label_names)

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._outputs.append({k: outputs[k].detach().cpu() for k in ("idx", "labels", "logits")})

    def _columns(self) -> list[str]:
        return ["Sentence", *(["Sentence 2"] if self.pairs is not None else []), "Label", "Predicted", "Probability"]

    def misclassified(self) -> pd.DataFrame:
        if not self._outputs:
            return pd.DataFrame(columns=self._columns())
        idx = torch.cat([o["idx"] for o in self._outputs])
        labels = torch.cat([o["labels"] for o in self._outputs])
        probs = torch.cat([o["logits"] for o in self._outputs]).float().softmax(-1)
        preds = probs.argmax(-1)
        names = self.label_names or [str(i) for i in range(probs.shape[-1])]
        rows = idx.tolist()
        frame = pd.DataFrame({
            "idx": idx.numpy(),
            "Sentence": [self.sentences[i] for i in rows],
            **({"Sentence 2": [self.pairs[i] for i in rows]} if self.pairs is not None else {}),
            "Label": [names[i] for i in labels.tolist()],
            "Predicted": [names[i] for i in preds.tolist()],
            "Probability": probs.max(-1).values.numpy().round(4),
        })
        wrong = frame[labels.numpy() != preds.numpy()].sort_values("idx").drop(columns="idx")
        return wrong.head(self.max_rows).reset_index(drop=True) if self.max_rows else wrong.reset_index(drop=True)

    def on_validation_end(self, trainer, module):
        trainer.logger.log_table(self.key, self.misclassified(), step=trainer.global_step)


SamplesVisualisationLogger = MisclassifiedExamples  # the seed's name: a callback, though the seed called it a logger
