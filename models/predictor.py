"""`ColaPredictor`: the seed's inference API over any sequence-classification folder."""
from __future__ import annotations

from typing import Sequence

import torch

from models.cola import LABELS


class ColaPredictor:
    def __init__(self, checkpoint: str) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()

    @torch.no_grad()
    def predict(self, sentences: Sequence[str]) -> list[list[dict]]:
        """For each sentence: `[{"label": "unacceptable", "score": p0}, {"label": "acceptable", "score": p1}]`."""
        batch = self.tokenizer(list(sentences), padding=True, truncation=True, max_length=128, return_tensors="pt")
        probs = self.model(**batch).logits.float().softmax(-1).tolist()
        return [[{"label": label, "score": score} for label, score in zip(LABELS, row)] for row in probs]
