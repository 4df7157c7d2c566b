"""Tokenization and dataloaders for any data source: training batches grouped by length, validation batches sorted
by length, each padded only to its longest sentence.

Knows no model class and no training loop: it needs a tokenizer and hands out batches of `input_ids`,
`attention_mask`, `token_type_ids`, `labels` and `idx` (the row's position, so a callback can find the raw sentence).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from data.cache import TokenCache, default_cache_dir
from data.sources import DataSource


@dataclass
class TextClassificationDataModule:
    """Tokenizes (or reads the tokenization cache) and builds the dataloaders: training batches grouped by length
    (seeded), validation batches sorted by length, each padded only to its longest sentence by
    `DataCollatorWithPadding`. Sentence pairs are encoded as pairs (`tokenizer(first, second)`).

    The data comes from `source` (a `data.sources.DataSource`); without one, CoLA from `data_dir` or the Hub."""

    tokenizer: object
    data_dir: str | None = None
    source: object = None
    batch_size: int = 32
    eval_batch_size: int = 64
    max_length: int = 128
    seed: int = 42
    num_workers: int | None = None  # None: `default_num_workers()`
    # Training batches padded to a multiple of this (16: lengths 16, 32, ..., 128, 8 shapes at most with max_length
    # 128), so that a step captured as a CUDA graph for each shape can be replayed; None: to the longest sentence.
    pad_to_multiple_of: int | None = None
    cache_dir: str | None = field(default_factory=lambda: default_cache_dir())  # None: tokenize every run
    splits: dict = field(default_factory=dict, init=False)

    def setup(self) -> "TextClassificationDataModule":
        import datasets

        datasets.disable_progress_bars()
        if self.source is None:
            self.source = DataSource(task="cola", data_dir=self.data_dir)
        raw = self.source.load()
        self.label_names = self.source.label_names
        self.is_pair = "sentence2" in next(iter(raw.values())).column_names
        self.sentences = {split: list(raw[split]["sentence"]) for split in raw}
        self.pairs = {split: list(raw[split]["sentence2"]) if self.is_pair else None for split in raw}
        self.labels = {split: list(raw[split]["label"]) for split in raw}
        text_columns = ["sentence", "sentence2"] if self.is_pair else ["sentence"]
        cache = TokenCache(self.cache_dir, self.tokenizer, self.max_length) if self.cache_dir else None
        self.splits = {}
        for split in raw:
            path = cache.path(self.source.fingerprints[split]) if cache else None
            cached = cache.load(path) if cache else None
            if cached is None:
                cached = raw[split].map(self._tokenize, batched=True, remove_columns=text_columns)
                if cache:
                    cache.save(path, cached)
            self.splits[split] = cached
        return self

    def _tokenize(self, batch):
        if "sentence2" in batch:
            return self.tokenizer(batch["sentence"], batch["sentence2"], truncation=True, max_length=self.max_length)
        return self.tokenizer(batch["sentence"], truncation=True, max_length=self.max_length)

    def _collator(self, pad_to_multiple_of: int | None = None):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self.tokenizer, pad_to_multiple_of=pad_to_multiple_of, return_tensors="pt")

    def _lengths(self, split: str) -> list[int]:
        return [len(ids) for ids in self.splits[split]["input_ids"]]

    def train_dataloader(self, num_processes: int = 1):
        """`num_processes`: how many processes share the epoch (see `LengthGroupedBatchSampler`)."""
        from torch.utils.data import DataLoader

        from data.sampling import LengthGroupedBatchSampler

        sampler = LengthGroupedBatchSampler(self._lengths("train"), self.batch_size, seed=self.seed,
                                            num_processes=num_processes)
        return DataLoader(self.splits["train"], batch_sampler=sampler,
                          **self._loader_options(self._collator(self.pad_to_multiple_of)))

    def val_dataloader(self):
        from torch.utils.data import DataLoader

        lengths = self._lengths("validation")
        order = sorted(range(len(lengths)), key=lengths.__getitem__)
        return DataLoader(self.splits["validation"], batch_size=self.eval_batch_size, sampler=order,
                          **self._loader_options())

    def _loader_options(self, collate_fn=None) -> dict:
        import torch

        workers = default_num_workers() if self.num_workers is None else self.num_workers
        return {"collate_fn": collate_fn or self._collator(), "num_workers": workers, "persistent_workers": workers > 0,
                "pin_memory": torch.cuda.is_available()}


ColaDataModule = TextClassificationDataModule  # the seed's name


def default_num_workers() -> int:
    """0, with or without a GPU. Collating a padded batch of CoLA takes about 0.2 ms (BENCHMARKS.md). Without a GPU
    a worker process would only take a core from the model's matrix products; with one, the step is bound by the
    host launching kernels, and workers only add work there: unpickling each batch from the worker's queue and a
    pin-memory thread that contends for the GIL with the thread that launches the kernels. Pinned memory stays on
    with a GPU (pinned in the main process), so the non-blocking copy to the device does not wait for the GPU."""
    return 0
