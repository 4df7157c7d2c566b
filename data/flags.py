"""The data-source flags that train.py, evaluate.py and sweep.py share, and the `DataSource` they name. One source:
--task (with --data-dir for CoLA's TSV folder), --train-file and --validation-file, or --dataset."""
from __future__ import annotations

import argparse

from data.glue import GLUE_TASKS, resolve_data_dir
from data.sources import DataSource

# The flags below, as hparams.yaml records them: a data source on the command line replaces a --config file's.
DATA_KEYS = ("task", "data_dir", "train_file", "validation_file", "dataset", "dataset_config", "train_split",
             "validation_split", "text_column", "text_pair_column", "label_column", "labels")


def label_list(text: str) -> tuple[str, ...]:
    items = tuple(t.strip() for t in text.split(","))
    if len(items) < 2 or not all(items) or len(set(items)) != len(items):
        raise argparse.ArgumentTypeError(f"expected 2 or more distinct class names, comma-separated, got {text!r}")
    return items


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data (one source: --task [--data-dir], --train-file and --validation-file, or --dataset)")
    g.add_argument("--task", type=str.lower, default=None, metavar="NAME",
                   help=f"a GLUE classification task from the Hub (nyu-mll/glue): {', '.join(GLUE_TASKS)}; mnli "
                        "validates on validation_matched (default: CoLA from the files shipped with the project, "
                        "offline; --task cola reads it from the Hub)")
    g.add_argument("--data-dir", default=None,
                   help="folder with CoLA's train.tsv and dev.tsv in GLUE format; default: $COLA_DIR, else the copy "
                        "shipped with the project (data/cola)")
    g.add_argument("--train-file", default=None, metavar="FILE",
                   help="training data: .csv, .tsv, or .json/.jsonl (JSON lines), with a header or keys")
    g.add_argument("--validation-file", default=None, metavar="FILE", help="validation data, same format")
    g.add_argument("--dataset", default=None, metavar="ID_OR_PATH",
                   help="a Hugging Face dataset: a Hub id, or a folder written by datasets' save_to_disk (offline)")
    g.add_argument("--dataset-config", default=None, help="the Hub dataset's configuration (subset) name")
    g.add_argument("--train-split", default="train", help="--dataset's training split (default: %(default)s)")
    g.add_argument("--validation-split", default="validation",
                   help="--dataset's validation split (default: %(default)s)")
    g.add_argument("--text-column", default=None,
                   help="column of the text in files and datasets (default: 'text', else 'sentence')")
    g.add_argument("--text-pair-column", default=None,
                   help="column of the second text of a pair (default: none, single texts)")
    g.add_argument("--label-column", default="label", help="column of the class (default: %(default)s)")
    g.add_argument("--labels", type=label_list, default=None, metavar="A,B,...",
                   help="class names in id order; labels in the data must be among them (integer labels are ids "
                        "into them). Default: the data's class names, else its sorted labels")


def source_from_args(args, labels=None, **options) -> DataSource:
    """The (not yet loaded) `DataSource` the flags name; `labels`: fixed class names (a checkpoint's), which take
    the place of --labels; `options`: more DataSource fields. With no data flag at all: CoLA from $COLA_DIR, else
    from the files shipped with the project; `--task cola` alone reads it from the Hub."""
    given = args.task or args.data_dir or args.train_file or args.validation_file or args.dataset
    data_dir = args.data_dir if given else resolve_data_dir(None)
    return DataSource(task=args.task, data_dir=data_dir, train_file=args.train_file,
                      validation_file=args.validation_file, dataset=args.dataset, dataset_config=args.dataset_config,
                      train_split=args.train_split, validation_split=args.validation_split,
                      text_column=args.text_column, text_pair_column=args.text_pair_column,
                      label_column=args.label_column, labels=labels or args.labels, **options)
