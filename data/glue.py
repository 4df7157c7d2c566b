"""The GLUE classification tasks: each one's columns and class names, CoLA's GLUE TSV files, and the Hub's
`nyu-mll/glue`. Every task comes out as the two splits every source gives (see data/sources.py).
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass

from data.errors import DataError

GLUE = "nyu-mll/glue"
HUB_DATASET = (GLUE, "cola")
SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv"}
DATA_DIR_ENV = "COLA_DIR"
# CoLA's train.tsv and dev.tsv, shipped with the project (data/cola/README.md: source, citation, terms)
SHIPPED_COLA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cola")


@dataclass(frozen=True)
class GlueTask:
    text: str
    pair: str | None
    labels: tuple[str, ...]  # the names of the Hub's ClassLabel feature, in id order
    validation: str = "validation"


GLUE_TASKS = {
    "cola": GlueTask("sentence", None, ("unacceptable", "acceptable")),
    "sst2": GlueTask("sentence", None, ("negative", "positive")),
    "mrpc": GlueTask("sentence1", "sentence2", ("not_equivalent", "equivalent")),
    "qqp": GlueTask("question1", "question2", ("not_duplicate", "duplicate")),
    "mnli": GlueTask("premise", "hypothesis", ("entailment", "neutral", "contradiction"), "validation_matched"),
    "qnli": GlueTask("question", "sentence", ("entailment", "not_entailment")),
    "rte": GlueTask("sentence1", "sentence2", ("entailment", "not_entailment")),
    "wnli": GlueTask("sentence1", "sentence2", ("not_entailment", "entailment")),
}
REGRESSION_TASKS = ("stsb",)


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


def resolve_data_dir(data_dir: str | None) -> str:
    """CoLA's folder: the one given, else $COLA_DIR, else the copy shipped with the project."""
    return data_dir or os.environ.get(DATA_DIR_ENV) or SHIPPED_COLA


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


def load_glue(task: str, data_dir: str | None = None):
    """(a `datasets.DatasetDict` with `train` and `validation` splits of sentence[, sentence2], label, idx; the class
    names in id order) of a GLUE task: CoLA from `data_dir` or the Hub, the others from the Hub."""
    import datasets

    spec = GLUE_TASKS[task]
    if task == "cola":  # exactly the seed's data, so its run does not move
        return load_cola(data_dir), spec.labels
    loaded = datasets.load_dataset(GLUE, task)
    feature = loaded["train"].features.get("label")
    names = tuple(getattr(feature, "names", None) or spec.labels)
    columns = {spec.text: "sentence", **({spec.pair: "sentence2"} if spec.pair else {})}
    raw = datasets.DatasetDict({  # idx: the row's position, as the examples table looks rows up by it
        split: loaded[hub_split].select_columns([*columns, "label"]).rename_columns(columns)
        .map(lambda _, i: {"idx": i}, with_indices=True)
        for split, hub_split in (("train", "train"), ("validation", spec.validation))})
    return raw, names
