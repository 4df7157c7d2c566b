"""`Predictor` (the seed's `ColaPredictor`): class probabilities from any sequence-classification folder, batched by
length."""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import torch


def pick_device(device: str = "auto") -> str:
    """"cuda" when asked for it or, with "auto", when a CUDA GPU is there; else "cpu". Asking for a GPU that is not
    there is a ValueError whose message says so."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU is visible here (torch.cuda.is_available() is False); pass "
                         "--device cpu, or auto")
    return device


class Predictor:
    def __init__(self, checkpoint: str, max_length: int = 128, device: str = "cpu") -> None:
        """`device`: where the model runs ("cpu", "cuda", "cuda:1"; see `pick_device`)."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(checkpoint)
        self.model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval().to(self.device)
        self.labels = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.max_length = max_length
        self._collate = DataCollatorWithPadding(self.tokenizer, return_tensors="pt")

    @torch.inference_mode()
    def probabilities(self, sentences: Sequence[str], batch_size: int = 64) -> list[list[float]]:
        """Class probabilities per sentence, in input order. Sentences are scored in batches of similar length,
        each padded only to its longest (as validation batches are), so a long input costs memory per batch."""
        encoded = self.tokenizer(list(sentences), truncation=True, max_length=self.max_length)
        features = [{k: encoded[k][i] for k in encoded} for i in range(len(sentences))]
        order = sorted(range(len(features)), key=lambda i: len(features[i]["input_ids"]))
        probs: list[list[float]] = [[] for _ in features]
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = self._collate([features[i] for i in chunk]).to(self.device)
            for i, row in zip(chunk, self.model(**batch).logits.float().softmax(-1).tolist()):
                probs[i] = row
        return probs

    def predict(self, sentences: Sequence[str], batch_size: int = 64) -> list[list[dict]]:
        """For each sentence: `[{"label": "unacceptable", "score": p0}, {"label": "acceptable", "score": p1}]`."""
        return [[{"label": label, "score": score} for label, score in zip(self.labels, row)]
                for row in self.probabilities(sentences, batch_size)]

    def stream(self, sentences: Iterable[str], batch_size: int = 64, chunk: int = 4096) -> Iterator[tuple[str, list]]:
        """(sentence, probabilities) for every sentence of a possibly endless iterable, `chunk` sentences at a
        time, so the output starts before the input ends and memory stays flat."""
        pending: list[str] = []
        for sentence in sentences:
            pending.append(sentence)
            if len(pending) == chunk:
                yield from zip(pending, self.probabilities(pending, batch_size))
                pending = []
        if pending:
            yield from zip(pending, self.probabilities(pending, batch_size))


ColaPredictor = Predictor  # the seed's name
