"""Where the text and labels come from: a GLUE task from the Hub, CoLA's GLUE TSV folder, CSV/TSV/JSON-lines files,
or any Hugging Face dataset (a Hub id or a folder written by `save_to_disk`).

Every source is turned into the same two splits, `train` and `validation`, with the columns `sentence` (the text),
`sentence2` (the second text of a pair; only for pair tasks), `label` (an integer id) and `idx` (the row's
position), plus the class names in id order. Knows no model and no loop.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

from data.errors import DataError
from data.files import read_table
from data.glue import DATA_DIR_ENV, GLUE, GLUE_TASKS, REGRESSION_TASKS, load_glue
from data.hub import require_hub
from data.labels import label_ids, label_text, warn_look_alikes, warn_mixed_types
from tracking.files import first_line

TEXT_COLUMNS = ("text", "sentence")  # the default --text-column: the first of these the data has


@dataclass
class DataSource:
    """One of: `task` (a GLUE task from the Hub), `data_dir` (CoLA's GLUE TSV folder), `train_file` and
    `validation_file`, or `dataset` (a Hub id or a `save_to_disk` folder). `labels` fixes the class names and their
    order; without it they come from the data (a ClassLabel feature's names, else the sorted training labels)."""

    task: str | None = None
    data_dir: str | None = None
    train_file: str | None = None
    validation_file: str | None = None
    dataset: str | None = None
    dataset_config: str | None = None
    train_split: str = "train"
    validation_split: str = "validation"
    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str = "label"
    labels: tuple[str, ...] | None = None
    # Who fixed `labels`, as errors name it: the user's --labels, or a checkpoint's classes (evaluate.py)
    labels_from: str = "--labels"
    # False (evaluate.py): a validation file alone is enough; the classes are the checkpoint's
    needs_train: bool = True
    label_names: tuple[str, ...] = field(default=(), init=False)
    fingerprints: dict = field(default_factory=dict, init=False)  # split -> a hash of its content, once loaded
    _raw: object = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.train_file or self.validation_file:
            if not self.validation_file or (self.needs_train and not self.train_file):
                raise DataError("--train-file and --validation-file go together; pass both")
            kind = "files"
        else:
            kind = "dataset" if self.dataset else "glue"
        if kind != "glue" and (self.task or self.data_dir):
            raise DataError(f"--{'task' if self.task else 'data-dir'} cannot be combined with "
                            f"{'--train-file' if kind == 'files' else '--dataset'}; pass one data source")
        if kind == "files" and self.dataset:
            raise DataError("--dataset cannot be combined with --train-file; pass one data source")
        if kind == "glue":
            self.task = (self.task or "cola").lower()
            if self.task in REGRESSION_TASKS:
                raise DataError(f"--task {self.task} is a regression task, which this project does not train; "
                                f"choose a classification task: {', '.join(GLUE_TASKS)}")
            if self.task not in GLUE_TASKS:
                raise DataError(f"unknown --task {self.task!r}; choose one of {', '.join(GLUE_TASKS)}, or pass "
                                "--train-file/--validation-file or --dataset for other data")
            if self.data_dir and self.task != "cola":
                raise DataError(f"--data-dir reads CoLA's GLUE TSV files only; for --task {self.task} drop --data-dir "
                                "(the Hub), or pass --train-file/--validation-file")
        self.kind = kind
        if self.labels is not None:
            self.labels = tuple(self.labels)
            if len(set(self.labels)) != len(self.labels) or len(self.labels) < 2 or not all(self.labels):
                raise DataError(f"--labels {','.join(self.labels)}: give 2 or more distinct class names, "
                                "comma-separated")

    @property
    def is_pair(self) -> bool:
        return self.text_pair_column is not None or (self.kind == "glue" and GLUE_TASKS[self.task].pair is not None)

    def describe(self) -> dict:
        """What a run records about its data: enough to read it again (see train.py --config)."""
        if self.kind == "glue":
            where = self.data_dir or f"hub:{GLUE}/{self.task}"
            out = {"source": "glue", "task": self.task, "from": where,
                   "validation_split": GLUE_TASKS[self.task].validation}
        elif self.kind == "files":
            out = {"source": "files", "train_file": self.train_file and os.path.abspath(self.train_file),
                   "validation_file": os.path.abspath(self.validation_file)}
        else:
            out = {"source": "dataset", "dataset": self.dataset, "dataset_config": self.dataset_config,
                   "train_split": self.train_split, "validation_split": self.validation_split}
        if self.kind != "glue":
            out.update(text_column=self.text_column, text_pair_column=self.text_pair_column,
                       label_column=self.label_column)
        rows = {split: self._raw[split].num_rows for split in self._raw} if self._raw is not None else {}
        return {**out, "label_names": list(self.label_names), "rows": rows, "fingerprint": dict(self.fingerprints)}

    def load(self):
        """A `datasets.DatasetDict` (train, validation) with sentence[, sentence2], label, idx; sets `label_names`.
        Read once: later calls return the same splits."""
        import datasets

        if self._raw is not None:
            return self._raw
        self._check_reachable()
        datasets.disable_progress_bars()
        try:
            if self.kind == "glue":
                raw, names = load_glue(self.task, self.data_dir)
                # a checkpoint's labels (evaluate.py): the same names, maybe in another order
                self._raw = self._remap(raw, names) if self.labels is not None else raw
                self.label_names = self.label_names or tuple(names)
            elif self.kind == "files":
                where = {"train": self.train_file, "validation": self.validation_file}
                frames = {split: read_table(path) for split, path in where.items() if path}
                self._raw = self._normalise(frames, where, class_names=None)
            else:
                self._raw = self._load_dataset()
        except DataError:
            raise
        except (OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as exc:
            raise DataError(f"cannot load the data ({first_line(exc, with_type=True)})") from None
        self.fingerprints = {split: fingerprint(self._raw[split]) for split in self._raw}
        return self._raw

    def _check_reachable(self) -> None:
        """Fail within seconds, saying what to pass instead, when the data must come from a Hub that cannot be
        reached, or names a dataset folder that does not exist."""
        if self.kind == "glue" and not self.data_dir:
            instead = f"pass --data-dir DIR with CoLA's train.tsv and dev.tsv (or set {DATA_DIR_ENV})" \
                if self.task == "cola" else "pass --train-file/--validation-file or --dataset with a local copy"
            require_hub(GLUE, "dataset", instead)
        elif self.kind == "dataset" and not os.path.isdir(self.dataset):
            if self.dataset.startswith((".", "/", "~")) or self.dataset.count("/") > 1:
                raise DataError(f"dataset folder {self.dataset!r} does not exist; pass a folder written by "
                                "save_to_disk or a Hub dataset id")
            require_hub(self.dataset, "dataset", "pass a folder written by save_to_disk, or --train-file")

    def _remap(self, raw, names):
        """Ids of `names` rewritten as ids of `self.labels` (which must hold the same classes)."""
        if tuple(self.labels) == tuple(names):
            self.label_names = tuple(names)
            return raw
        missing = [n for n in names if n not in self.labels]
        if missing:
            raise DataError(f"the data's classes {', '.join(missing)} are not among {self.labels_from} "
                            f"({', '.join(self.labels)}); evaluate a model trained on this data")
        position = {n: self.labels.index(n) for n in names}
        self.label_names = tuple(self.labels)
        return raw.map(lambda row: {"label": position[names[row["label"]]]})

    def _load_dataset(self):
        import datasets

        if os.path.isdir(self.dataset):
            try:
                loaded = datasets.load_from_disk(self.dataset)
            except (FileNotFoundError, ValueError) as exc:
                raise DataError(f"{self.dataset}: not a folder written by datasets' save_to_disk "
                                f"({first_line(exc)})") from None
            if not isinstance(loaded, datasets.DatasetDict):
                raise DataError(f"{self.dataset}: holds a single split; save a DatasetDict with "
                                f"{self.train_split} and {self.validation_split} splits")
        else:
            loaded = datasets.load_dataset(self.dataset, self.dataset_config)
        where = {"train": f"{self.dataset} split {self.train_split!r}",
                 "validation": f"{self.dataset} split {self.validation_split!r}"}
        splits = {}
        for split, name in (("train", self.train_split), ("validation", self.validation_split)):
            if name not in loaded:
                raise DataError(f"{self.dataset}: no split {name!r} (it has {', '.join(loaded)}); pass "
                                f"--{split}-split NAME")
            splits[split] = loaded[name]
        class_names = _class_names(splits["train"], self.label_column)
        frames = {split: ds.to_pandas() for split, ds in splits.items()}
        return self._normalise(frames, where, class_names)

    def _normalise(self, frames: dict, where: dict, class_names):
        """Columns checked and renamed, labels mapped to ids; every problem a DataError naming file and row."""
        import datasets

        columns = set.intersection(*(set(frame.columns) for frame in frames.values()))
        if self.text_column is None:
            self.text_column = next((c for c in TEXT_COLUMNS if c in columns), TEXT_COLUMNS[0])
        flags = {self.text_column: "--text-column", self.text_pair_column: "--text-pair-column",
                 self.label_column: "--label-column"}
        texts = {}
        for split, frame in frames.items():
            if len(frame) == 0:
                raise DataError(f"{where[split]}: no rows; the {split} split must not be empty")
            missing = [column for column in flags if column and column not in frame.columns]
            if missing:  # all of them in one line
                have = ", ".join(map(str, frame.columns))
                raise DataError(f"{where[split]}: no column {' and no column '.join(map(repr, missing))} (it has "
                                f"{have}); pass {' and '.join(f'{flags[c]} NAME' for c in missing)}")
            texts[split] = {name: _texts(frame[col], where[split], col)
                            for name, col in (("sentence", self.text_column), ("sentence2", self.text_pair_column))
                            if col}
        values = {}
        for split, frame in frames.items():
            raw = frame[self.label_column].tolist()
            if split == "train" or where[split] != where.get("train"):  # one warning a file
                warn_mixed_types(raw, where[split], self.label_column)
            values[split] = [label_text(v, where[split], row, self.label_column, class_names)
                             for row, v in enumerate(raw, start=1)]
        if self.labels is None and class_names is None:
            warn_look_alikes(values["train"], where["train"], self.label_column)
        self.label_names, ids = label_ids(values, where, self.labels or class_names, self.label_column,
                                          self.labels_from if self.labels else "the dataset's class names")
        return datasets.DatasetDict({
            split: datasets.Dataset.from_dict({**texts[split], "label": ids[split],
                                               "idx": list(range(len(ids[split])))})
            for split in frames})


def _class_names(dataset, column: str) -> tuple[str, ...] | None:
    feature = dataset.features.get(column)
    names = getattr(feature, "names", None)
    return tuple(names) if names else None


def fingerprint(raw) -> str:
    """A hash of a split's content (every column, every row, in order): the same data, the same fingerprint."""
    digest = hashlib.sha256()
    digest.update(json.dumps([raw.column_names, raw.to_dict()], sort_keys=True, default=str).encode())
    return digest.hexdigest()[:16]


def _texts(series, where: str, column: str) -> list[str]:
    out = []
    for row, value in enumerate(series.tolist(), start=1):
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: row {row}: empty or missing text in column {column!r}")
        out.append(value)
    return out
