"""`ColaPredictor`: the seed's inference API over any sequence-classification folder."""
from __future__ import annotations

from typing import Sequence

import torch


class ColaPredictor:
    def __init__(self, checkpoint: str) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()

    @torch.no_grad()
    def predict(self, sentences: Sequence[str]) -> list[list[dict]]:
        """For each sentence, one `{"label": name, "score": p}` per class, named by the checkpoint's `id2label`
        (CoLA: `[{"label": "unacceptable", "score": p0}, {"label": "acceptable", "score": p1}]`)."""
        batch = self.tokenizer(list(sentences), padding=True, truncation=True, max_length=128, return_tensors="pt")
        probs = self.model(**batch).logits.float().softmax(-1).tolist()
        names = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        return [[{"label": label, "score": score} for label, score in zip(names, row)] for row in probs]
