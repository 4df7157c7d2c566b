"""CoLA loading (Hugging Face Hub or a local folder of GLUE TSV files); tokenization and dataloaders for any
source (data/sources.py).

Knows no model class and no training loop: it needs a tokenizer and hands out batches of `input_ids`,
`attention_mask`, `token_type_ids`, `labels` and `idx` (the row's position, so a callback can find the raw sentence).
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass, field

HUB_DATASET = ("nyu-mll/glue", "cola")
CACHE_ENV = "COLA_MONITOR_CACHE"
SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv"}
DATA_DIR_ENV = "COLA_DIR"
log = logging.getLogger(__name__)


class DataError(ValueError):
    """Bad or missing data, with a message that names the file, the line and what to do."""


def read_glue_tsv(path: str) -> dict[str, list]:
    """Rows of a GLUE CoLA file (`source<TAB>label<TAB>annotation<TAB>sentence`, no quoting).

    Accepts a UTF-8 byte-order mark, CRLF line ends and one header line. Raises DataError on anything else odd.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found; pass --data-dir (or set {DATA_DIR_ENV}) to a folder with "
                        f"{' and '.join(SPLIT_FILES.values())} in GLUE CoLA format")
    sentences, labels = [], []
    reader = None
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            for line_no, row in enumerate(reader, start=1):
                if line_no == 1 and len(row) >= 2 and row[1].strip().lower() == "label":
                    continue  # a header line
                if not row or row == [""]:
                    raise DataError(f"{path}:{line_no}: empty line; remove it")
                if len(row) != 4:
                    raise DataError(f"{path}:{line_no}: expected 4 tab-separated columns (source, label, annotation, "
                                    f"sentence), found {len(row)}")
                if row[1] not in ("0", "1"):
                    raise DataError(f"{path}:{line_no}: label must be 0 or 1, found {row[1]!r}")
                if not row[3].strip():
                    raise DataError(f"{path}:{line_no}: empty sentence")
                sentences.append(row[3])
                labels.append(int(row[1]))
    except UnicodeDecodeError as exc:
        line_no = _line_of_offset(path, exc.start)
        raise DataError(f"{path}:{line_no}: bytes that are not UTF-8; re-encode the file as UTF-8") from None
    except csv.Error as exc:  # e.g. a field longer than the csv module's limit (128 KiB)
        raise DataError(f"{path}:{reader.line_num}: cannot be read as a GLUE TSV row ({exc}); a CoLA sentence is "
                        "one short line") from None
    if not sentences:
        raise DataError(f"{path}: no rows; expected GLUE CoLA rows (source, label, annotation, sentence)")
    return {"sentence": sentences, "label": labels, "idx": list(range(len(sentences)))}


def _line_of_offset(path: str, offset: int) -> int:
    with open(path, "rb") as f:
        return f.read(offset).count(b"\n") + 1


def resolve_data_dir(data_dir: str | None) -> str | None:
    return data_dir or os.environ.get(DATA_DIR_ENV) or None


def load_cola(data_dir: str | None = None):
    """A `datasets.DatasetDict` with `train` and `validation` splits (sentence, label, idx).

    From `data_dir` when given, else from the Hub exactly as the seed does (`load_dataset("nyu-mll/glue", "cola")`).
    """
    import datasets

    if data_dir:
        if not os.path.isdir(data_dir):
            raise DataError(f"{data_dir}: data folder not found; pass --data-dir (or set {DATA_DIR_ENV}) to a folder "
                            f"with {' and '.join(SPLIT_FILES.values())}")
        return datasets.DatasetDict({
            split: datasets.Dataset.from_dict(read_glue_tsv(os.path.join(data_dir, name)))
            for split, name in SPLIT_FILES.items()
        })
    try:
        loaded = datasets.load_dataset(*HUB_DATASET)
    except Exception as exc:  # offline with no cached copy, an unreachable Hub, a damaged cache
        raise DataError(f"cannot load {'/'.join(HUB_DATASET)} from the Hugging Face Hub or its cache "
                        f"({type(exc).__name__}); pass --data-dir DIR with CoLA's train.tsv and dev.tsv (or set "
                        f"{DATA_DIR_ENV})") from None
    return datasets.DatasetDict({split: loaded[split] for split in SPLIT_FILES})


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

        from data.sources import DataSource

        datasets.disable_progress_bars()
        if self.source is None:
            self.source = DataSource(task="cola", data_dir=self.data_dir)
        raw = self.source.load()
        self.label_names = self.source.label_names
        self.is_pair = "sentence2" in raw["train"].column_names
        self.sentences = {split: list(raw[split]["sentence"]) for split in raw}
        self.pairs = {split: list(raw[split]["sentence2"]) if self.is_pair else None for split in raw}
        self.labels = {split: list(raw[split]["label"]) for split in raw}
        text_columns = ["sentence", "sentence2"] if self.is_pair else ["sentence"]
        cache = TokenCache(self.cache_dir, self.tokenizer, self.max_length) if self.cache_dir else None
        self.splits = {}
        for split in raw:
            path = cache.path(raw[split]) if cache else None
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

    def train_shapes(self) -> list[int]:
        """The padded lengths that training batches take: one per bucket with `pad_to_multiple_of`."""
        lengths = self._lengths("train")
        m = self.pad_to_multiple_of or 1
        return sorted({-(-n // m) * m for n in lengths})

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


def default_cache_dir() -> str:
    """$COLA_MONITOR_CACHE, else $XDG_CACHE_HOME/cola-monitor, else ~/.cache/cola-monitor."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get(CACHE_ENV) or os.path.join(base, "cola-monitor")


class TokenCache:
    """Tokenized splits kept across runs, keyed by a hash of the split's content (sentences, labels, order), the
    tokenizer (its full serialised definition: vocabulary, normaliser, special tokens) and `max_length`. A changed
    file or tokenizer gives a new key, never a stale entry. The cache only saves time: a folder that cannot be read
    or written costs a warning and a fresh tokenization, never the run."""

    def __init__(self, root: str, tokenizer, max_length: int) -> None:
        self.root = os.path.join(root, "tokenized")
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:  # less the truncation and padding that each call sets on it
            definition = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        else:  # a slow (Python) tokenizer: datasets' own fingerprinting hashes the object
            from datasets.fingerprint import Hasher

            definition = Hasher.hash(tokenizer)
        self.salt = json.dumps([type(tokenizer).__name__, definition, max_length])

    def path(self, raw) -> str:
        """The entry for an untokenized split `raw`."""
        digest = hashlib.sha256(self.salt.encode())
        digest.update(json.dumps([raw.column_names, raw.to_dict()], sort_keys=True).encode())
        return os.path.join(self.root, digest.hexdigest()[:32])

    def load(self, path: str):
        import datasets

        if not os.path.isdir(path):
            return None
        try:
            return datasets.load_from_disk(path)
        except Exception as exc:  # a damaged entry: tokenize again and replace it
            log.warning("tokenization cache: cannot read %s (%s); tokenizing again", path, type(exc).__name__)
            shutil.rmtree(path, ignore_errors=True)
            return None

    def save(self, path: str, tokenized) -> None:
        tmp = f"{path}.tmp-{os.getpid()}"
        try:
            os.makedirs(self.root, exist_ok=True)
            tokenized.save_to_disk(tmp)
            os.rename(tmp, path)  # atomic; another process that got there first wins
        except OSError as exc:
            if not os.path.isdir(path):
                log.warning("tokenization cache: cannot write %s (%s); set %s to a writable folder to keep "
                            "tokenizations between runs", self.root, exc.strerror or exc, CACHE_ENV)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
