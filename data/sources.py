"""Where the text and labels come from: a GLUE task from the Hub, CoLA's GLUE TSV folder, CSV/TSV/JSON-lines files,
or any Hugging Face dataset (a Hub id or a folder written by `save_to_disk`).

Every source is turned into the same two splits, `train` and `validation`, with the columns `sentence` (the text),
`sentence2` (the second text of a pair; only for pair tasks), `label` (an integer id) and `idx` (the row's
position), plus the class names in id order. Knows no model and no loop.
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field

from data.errors import DataError
from data.glue import DATA_DIR_ENV, GLUE, GLUE_TASKS, REGRESSION_TASKS, load_glue
from data.hub import require_hub
from tracking.files import first_line

SPLITS = ("train", "validation")
TEXT_COLUMNS = ("text", "sentence")  # the default --text-column: the first of these the data has
FILE_TYPES = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json"}


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
    label_names: tuple[str, ...] = field(default=(), init=False)
    _raw: object = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.train_file or self.validation_file:
            if not (self.train_file and self.validation_file):
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
            out = {"source": "files", "train_file": os.path.abspath(self.train_file),
                   "validation_file": os.path.abspath(self.validation_file)}
        else:
            out = {"source": "dataset", "dataset": self.dataset, "dataset_config": self.dataset_config,
                   "train_split": self.train_split, "validation_split": self.validation_split}
        if self.kind != "glue":
            out.update(text_column=self.text_column, text_pair_column=self.text_pair_column,
                       label_column=self.label_column)
        return {**out, "label_names": list(self.label_names)}

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
                frames = {"train": read_table(self.train_file), "validation": read_table(self.validation_file)}
                where = {"train": self.train_file, "validation": self.validation_file}
                self._raw = self._normalise(frames, where, class_names=None)
            else:
                self._raw = self._load_dataset()
        except DataError:
            raise
        except (OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as exc:
            raise DataError(f"cannot load the data ({first_line(exc, with_type=True)})") from None
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
            raise DataError(f"the data's classes {', '.join(missing)} are not among the model's labels "
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

        columns = set(frames["train"].columns) & set(frames["validation"].columns)
        if self.text_column is None:
            self.text_column = next((c for c in TEXT_COLUMNS if c in columns), TEXT_COLUMNS[0])
        wanted = [self.text_column, *([self.text_pair_column] if self.text_pair_column else []), self.label_column]
        texts = {}
        for split, frame in frames.items():
            if len(frame) == 0:
                raise DataError(f"{where[split]}: no rows; the {split} split must not be empty")
            for column in wanted:
                if column not in frame.columns:
                    flag = {self.text_column: "--text-column", self.label_column: "--label-column"}.get(
                        column, "--text-pair-column")
                    have = ", ".join(map(str, frame.columns))
                    raise DataError(f"{where[split]}: no column {column!r} (it has {have}); pass {flag} NAME")
            texts[split] = {name: _texts(frame[col], where[split], col)
                            for name, col in (("sentence", self.text_column), ("sentence2", self.text_pair_column))
                            if col}
        values = {split: _label_values(frame[self.label_column], where[split], self.label_column, class_names)
                  for split, frame in frames.items()}
        self.label_names, ids = _label_ids(values, where, self.labels or class_names, self.label_column,
                                           "--labels" if self.labels else "the dataset's class names")
        return datasets.DatasetDict({
            split: datasets.Dataset.from_dict({**texts[split], "label": ids[split],
                                               "idx": list(range(len(ids[split])))})
            for split in frames})


def read_table(path: str):
    """A CSV, TSV or JSON-lines file as a DataFrame of strings (JSON keeps its types), read by pandas."""
    import pandas as pd

    if not os.path.isfile(path):
        raise DataError(f"{path}: file not found")
    kind = FILE_TYPES.get(os.path.splitext(path)[1].lower())
    if kind is None:
        raise DataError(f"{path}: unknown file type; name it .csv, .tsv, .json or .jsonl (JSON lines)")
    try:
        if kind == "json":
            return pd.read_json(path, lines=True, dtype=False, encoding="utf-8")
        # the C parser has no field-size limit (Python's csv module stops at 128 KiB per field)
        return pd.read_csv(path, sep="\t" if kind == "tsv" else ",", dtype=str, keep_default_na=False,
                           encoding="utf-8-sig", engine="c", quoting=csv.QUOTE_NONE if kind == "tsv" else
                           csv.QUOTE_MINIMAL)
    except UnicodeDecodeError:
        raise DataError(f"{path}: bytes that are not UTF-8; re-encode the file as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: empty file; it needs a header line and rows") from None
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"{path}: cannot be read as {kind.upper()} ({first_line(exc)})") from None


def _class_names(dataset, column: str) -> tuple[str, ...] | None:
    feature = dataset.features.get(column)
    names = getattr(feature, "names", None)
    return tuple(names) if names else None


def _texts(series, where: str, column: str) -> list[str]:
    out = []
    for row, value in enumerate(series.tolist(), start=1):
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: row {row}: empty or missing text in column {column!r}")
        out.append(value)
    return out


def _label_values(series, where: str, column: str, class_names) -> list:
    """Each label as an int or a str (a ClassLabel id becomes its name); floats that are not whole refused."""
    out = []
    for row, value in enumerate(series.tolist(), start=1):
        if class_names is not None and isinstance(value, int) and 0 <= value < len(class_names):
            value = class_names[value]
        elif class_names is not None and isinstance(value, int):  # -1: an unlabelled (test) row
            raise DataError(f"{where}: row {row}: label {value} is not a class id; this split has no labels")
        if isinstance(value, bool):
            value = str(value).lower()
        if isinstance(value, float):
            if math.isnan(value):
                value = ""
            elif value.is_integer():
                value = int(value)
            else:
                raise DataError(f"{where}: row {row}: label {value!r} in column {column!r} is not a class; "
                                "regression (a number as the target) is not supported, only classification")
        if isinstance(value, str):
            text = value.strip()
            if not text:
                raise DataError(f"{where}: row {row}: empty or missing label in column {column!r}")
            try:
                number = float(text)
            except ValueError:
                number = None
            if number is not None and not number.is_integer():
                raise DataError(f"{where}: row {row}: label {text!r} in column {column!r} is not a class; "
                                "regression (a number as the target) is not supported, only classification")
            value = int(number) if number is not None and text.lstrip("+-").isdigit() else text
        if not isinstance(value, (int, str)):
            raise DataError(f"{where}: row {row}: label {value!r} in column {column!r} is neither a string nor an "
                            "integer")
        out.append(value)
    return out


def _label_ids(values: dict, where: dict, labels, column: str, named_by: str = "--labels"
               ) -> tuple[tuple[str, ...], dict]:
    """(class names in id order, ids per split). Names: `labels` when given, else the sorted training labels.
    Integer labels with non-integer `labels` names are ids into `labels`."""
    train = values["train"]
    if labels is not None:
        names = tuple(labels)
        by_position = all(isinstance(v, int) for split in values.values() for v in split) and \
            not all(n.lstrip("+-").isdigit() for n in names)
        keys = {i: i for i in range(len(names))} if by_position else {n: i for i, n in enumerate(names)}
    else:
        distinct = set(train)
        ordered = sorted(distinct, key=lambda v: (isinstance(v, str), v))  # ints numerically, then strings
        names = tuple(str(v) for v in ordered)
        keys = {str(v): i for i, v in enumerate(ordered)}
        by_position = False
    if len(names) < 2:
        raise DataError(f"{where['train']}: only one class ({', '.join(names) or 'none'}) in column {column!r}; "
                        "a classifier needs at least 2")
    ids = {}
    for split, split_values in values.items():
        ids[split] = []
        for row, value in enumerate(split_values, start=1):
            key = value if by_position else str(value)
            if key not in keys:
                known = ", ".join(names)
                if labels is not None:
                    raise DataError(f"{where[split]}: row {row}: label {value!r} is not in {named_by} ({known})")
                raise DataError(f"{where[split]}: row {row}: label {value!r} never occurs in the training data "
                                f"({known}); a class must have training examples")
            ids[split].append(keys[key])
    if labels is not None:
        seen = set(ids["train"])
        absent = [n for i, n in enumerate(names) if i not in seen]
        if absent:
            raise DataError(f"{where['train']}: no training example of class {', '.join(absent)} from {named_by}; "
                            "a class needs training examples")
    return names, ids
