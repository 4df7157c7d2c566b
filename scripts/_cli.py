"""What the three scripts share: argument types, the one-line error exit, Hub reachability and run folders."""
from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Callable

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # the shell's code for a process ended by SIGINT


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: what was wrong and where to look, no usage dump."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(kind, accept, expected: str):
    """An argparse type: `kind(text)` that `accept` takes (NaN never compares true, so it is refused)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not accept(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


positive_int = _number(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _number(float, lambda v: 0 < v < math.inf, "a positive number")
non_negative_float = _number(float, lambda v: 0 <= v < math.inf, "a finite number >= 0")
fraction = _number(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
seed = _number(int, lambda v: 0 <= v < 2**32, "an integer in [0, 4294967295]")  # what numpy, torch, random take


def probability_or_none(text: str) -> float | None:
    if text.lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1) or 'none', got {text!r}")
    return value


def existing_dir(text: str) -> str:
    if not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"folder {text!r} does not exist")
    return text


def logger_spec(text: str) -> str:
    from tracking import parse_logger_names

    try:
        return ",".join(parse_logger_names(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def comma_list(choices):
    def parse(text: str) -> tuple[str, ...]:
        items = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
        unknown = [t for t in items if t not in choices]
        if unknown or not items:
            raise argparse.ArgumentTypeError(f"unknown value {','.join(unknown) or repr(text)}: choose from "
                                             f"{', '.join(choices)} (comma-separated)")
        return items
    return parse


def add_logger_args(p: argparse.ArgumentParser) -> None:
    """--logger and the W&B and MLflow backends' options, shared by train.py and evaluate.py."""
    p.add_argument("--logger", type=logger_spec, default="csv",
                   help="trackers on top of the local files every run writes, comma-separated: wandb, tensorboard, "
                        "mlflow, csv, none (default: %(default)s)")
    p.add_argument("--run-group", default=None, metavar="NAME",
                   help="a group of runs: the W&B group, the MLflow parent run (sweep.py puts a sweep's trials in one)")
    p.add_argument("--logger-timeout", type=positive_float, default=60.0,
                   help="seconds a tracker may take over one call before it is switched off for the rest of the "
                        "run; training never waits longer (default: %(default)s)")
    g = p.add_argument_group("Weights & Biases (--logger wandb)")
    g.add_argument("--wandb-project", default="MLOps Basics", help="(default: %(default)s)")
    g.add_argument("--wandb-entity", default=None, help="team or user (default: your default entity)")
    g.add_argument("--wandb-mode", choices=["online", "offline", "disabled"], default=None,
                   help="default: $WANDB_MODE, else online when `wandb login` was done and offline when not")
    g.add_argument("--wandb-tags", type=lambda t: tuple(x.strip() for x in t.split(",") if x.strip()), default=(),
                   help="comma-separated run tags")
    g.add_argument("--confusion-matrix", type=comma_list(("wandb", "sklearn", "seaborn")),
                   default=("wandb", "sklearn", "seaborn"),
                   help="the post's three confusion-matrix charts in W&B: wandb (`conf`, wandb.plot), sklearn "
                        "(`cm`, wandb's scikit-learn plot), seaborn (`Confusion Matrix` heatmap image); default: all")
    g = p.add_argument_group("MLflow (--logger mlflow)", "the store is $MLFLOW_TRACKING_URI (such as "
                             "http://127.0.0.1:5000), else <output-dir>/mlflow.db")
    g.add_argument("--mlflow-experiment", default="MLOps Basics", help="experiment name (default: %(default)s)")


def logger_options(args, run_name: str) -> dict:
    return {"project": args.wandb_project, "entity": args.wandb_entity, "mode": args.wandb_mode,
            "run_name": run_name, "group": args.run_group, "tags": args.wandb_tags,
            "confusion_matrix": args.confusion_matrix,
            "mlflow_experiment": args.mlflow_experiment, "timeout": args.logger_timeout}


def git_commit() -> str | None:
    """The commit of the code being run, when it runs from a git checkout."""
    import subprocess

    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(os.path.abspath(__file__)),
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def require_hub(repo_id: str, repo_type: str, instead: str) -> None:
    """Fail within seconds, naming `instead`, when `repo_id` is needed from a Hub that cannot be reached.

    With HF_HUB_OFFLINE=1 the Hugging Face libraries read their local cache and fail fast on their own."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE:
        return
    try:
        HfApi().repo_info(repo_id, repo_type=repo_type, timeout=5)
    except RepositoryNotFoundError:
        raise UsageError(f"{repo_type} {repo_id!r} is neither a local folder nor a repository on the Hugging Face "
                         f"Hub; {instead}") from None
    except Exception as exc:  # connection refused, DNS failure, time-out, proxy error
        raise UsageError(f"cannot reach the Hugging Face Hub to get {repo_type} {repo_id!r} "
                         f"({type(exc).__name__}); {instead}, or set HF_HUB_OFFLINE=1 to use a cached copy") from None


def label_list(text: str) -> tuple[str, ...]:
    items = tuple(t.strip() for t in text.split(","))
    if len(items) < 2 or not all(items) or len(set(items)) != len(items):
        raise argparse.ArgumentTypeError(f"expected 2 or more distinct class names, comma-separated, got {text!r}")
    return items


def add_data_args(p: argparse.ArgumentParser) -> None:
    """The data-source flags, shared by train.py and evaluate.py. One source: --task (with --data-dir for CoLA's TSV
    folder), --train-file/--validation-file, or --dataset."""
    from data import GLUE_TASKS

    g = p.add_argument_group("data (one source: --task [--data-dir], --train-file and --validation-file, or --dataset)")
    g.add_argument("--task", type=str.lower, default=None, metavar="NAME",
                   help=f"a GLUE classification task from the Hub (nyu-mll/glue): {', '.join(GLUE_TASKS)}; mnli "
                        "validates on validation_matched (default: cola)")
    g.add_argument("--data-dir", default=None,
                   help="folder with CoLA's train.tsv and dev.tsv in GLUE format; default: $COLA_DIR, else the "
                        "Hub's nyu-mll/glue (cola)")
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


DATA_KEYS = ("task", "data_dir", "train_file", "validation_file", "dataset", "dataset_config", "train_split",
             "validation_split", "text_column", "text_pair_column", "label_column", "labels")


def load_data_source(args, labels=None):
    """The `data.DataSource` the flags name, read (raw splits and class names), with the Hub checked first.
    `labels`: fixed class names (a checkpoint's), which take the place of --labels."""
    import datasets

    from data import HUB_DATASET, DataError, DataSource, resolve_data_dir

    other = args.train_file or args.validation_file or args.dataset
    data_dir = args.data_dir if other or (args.task or "cola") != "cola" else resolve_data_dir(args.data_dir)
    source = DataSource(task=args.task, data_dir=data_dir, train_file=args.train_file,
                        validation_file=args.validation_file, dataset=args.dataset, dataset_config=args.dataset_config,
                        train_split=args.train_split, validation_split=args.validation_split,
                        text_column=args.text_column, text_pair_column=args.text_pair_column,
                        label_column=args.label_column, labels=labels or args.labels)
    if source.kind == "glue" and not source.data_dir:
        instead = "pass --data-dir DIR with CoLA's train.tsv and dev.tsv (or set COLA_DIR)" if source.task == "cola" \
            else "pass --train-file/--validation-file or --dataset with a local copy"
        require_hub(HUB_DATASET[0], "dataset", instead)
    elif source.kind == "dataset" and not os.path.isdir(source.dataset):
        if source.dataset.startswith((".", "/", "~")) or source.dataset.count("/") > 1:
            raise UsageError(f"dataset folder {source.dataset!r} does not exist; pass a folder written by "
                             "save_to_disk or a Hub dataset id")
        require_hub(source.dataset, "dataset", "pass a folder written by save_to_disk, or --train-file")
    try:
        source.load()
    except DataError:
        raise
    except (OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as exc:
        raise UsageError(f"cannot load the data ({type(exc).__name__}: {str(exc).strip().splitlines()[0]})") from None
    return source


def official_metrics(source) -> tuple[str, ...]:
    """The task's official metrics (models/tasks.py); the first is the default --monitor."""
    from models import official_metrics as official

    return official(source.task if source.kind == "glue" else None, len(source.label_names))


def model_options(source) -> dict:
    """What the classifier needs to know of the data: its class names, and whether to log the positive class's F1."""
    return {"label_names": list(source.label_names), "f1_positive": "valid/f1_positive" in official_metrics(source)}


def best_score_modes(official: tuple[str, ...], monitor: str, mode: str) -> dict[str, str]:
    """What `BestScores` keeps for the summary: valid/loss, the task's official metrics, and the monitored metric."""
    modes = {"valid/loss": "min", **dict.fromkeys(official, "max")}
    modes.setdefault(monitor, mode)
    return modes


def checkpoint_labels(path: str) -> tuple[str, ...] | None:
    """A model folder's class names, None where they are transformers' defaults (LABEL_0, LABEL_1, ...)."""
    from transformers import AutoConfig

    check_model_source(path)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load model {path!r}: {str(exc).strip().splitlines()[0]}") from None
    names = tuple(str(config.id2label[i]) for i in range(config.num_labels))
    return None if names == tuple(f"LABEL_{i}" for i in range(len(names))) else names


def match_model_to_data(model, source, name: str) -> None:
    """A loaded classifier set up for `source`: the same number of classes (else a UsageError), the data's class
    names where the model has only transformers' defaults, and the task's extra metrics."""
    if len(model.label_names) != len(source.label_names):
        raise UsageError(f"{name} has {len(model.label_names)} classes and the data {len(source.label_names)} "
                         f"({', '.join(source.label_names)}); pass the data it was trained on")
    if model.label_names != list(source.label_names):  # LABEL_0, LABEL_1, ...: name them as the data does
        model.label_names = list(source.label_names)
        model.model.config.id2label = dict(enumerate(model.label_names))
        model.model.config.label2id = {n: i for i, n in enumerate(model.label_names)}
    model.f1_positive = model_options(source)["f1_positive"]


def build_datamodule(source, tokenizer, **options):
    """The tokenized splits and dataloaders of a loaded `source` (see `load_data_source`)."""
    from data import TextClassificationDataModule

    return TextClassificationDataModule(tokenizer, source=source, **options).setup()


def parse_args(parser: argparse.ArgumentParser, argv: list[str] | None, extras: tuple[str, ...] = ()):
    """`parser.parse_args(argv)`, where `--config FILE` (an hparams.yaml a run wrote) supplies flags that the command
    line does not give. Keys of the file that are not flags must be in `extras` (what a run records besides its
    flags: versions, git commit, ...); any other key is an error. A data source on the command line replaces the
    file's. The file's run name and resume target are not reused: a re-run is a new run."""
    import yaml

    args = parser.parse_args(argv)
    path = getattr(args, "config", None)
    if not path:
        return args
    try:
        with open(path, encoding="utf-8") as f:
            saved = yaml.safe_load(f) or {}
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot read it ({exc.strerror or exc})") from None
    except yaml.YAMLError:
        raise UsageError(f"--config {path}: not a YAML file; pass the hparams.yaml of a run") from None
    if not isinstance(saved, dict):
        raise UsageError(f"--config {path}: expected a mapping of flag names to values, like a run's hparams.yaml")
    actions = {a.dest: a for a in parser._actions if a.option_strings and a.default != argparse.SUPPRESS}
    unknown = [k for k in saved if k not in actions and k not in extras]
    if unknown:
        raise UsageError(f"--config {path}: {', '.join(map(str, unknown))} is not a flag of {parser.prog}; remove it "
                         "from the file")
    defaults = parser.parse_args([])
    given = {dest for dest in actions if getattr(args, dest) != getattr(defaults, dest, None)}
    skip = {"config", "run_name", "resume", "help"} | (set(DATA_KEYS) if given & set(DATA_KEYS) else set())
    tokens = []
    for dest, value in saved.items():
        if dest not in actions or dest in skip or value is None or value is False:
            continue
        action = actions[dest]
        flag = action.option_strings[-1]
        if action.nargs == 0:  # store_true
            tokens.append(flag)
        else:
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            tokens.append(f"{flag}={text}")
    return parser.parse_args(tokens + list(argv if argv is not None else sys.argv[1:]))


def check_model_source(name: str) -> None:
    """`minilm`, a local folder with a config.json, or a Hub id the Hub can serve; anything else is refused before
    any weights are read."""
    from models import MINILM

    if name == MINILM:
        return
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise UsageError(f"{name}: not a Hugging Face model folder (no config.json); pass a folder written by "
                             "save_pretrained, such as <run>/checkpoints/best")
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name.replace("/", "", 1):
        raise UsageError(f"model folder {name!r} does not exist; pass an existing folder, a Hub id or '{MINILM}'")
    require_hub(name, "model", f"pass a local model folder or --model {MINILM} (weights shipped with the install)")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


def _loading(name: str, load):
    """`load()` with transformers' own load report and progress bars silenced, and any failure to read the files
    (missing, truncated, a damaged header, tensors of the wrong shape, a broken tokenizer file) as one UsageError.
    Weights load through safetensors or `torch.load(weights_only=True)` only (transformers' default), so a pickle
    that carries code is refused, never run."""
    import pickle

    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()  # for good: the scripts show their own progress, not each file written
    try:
        return load()
    except pickle.UnpicklingError:
        raise UsageError(f"cannot load model {name!r}: its weights are a pickle that carries code, which is never "
                         "run; convert the checkpoint to safetensors from a trusted source") from None
    except (UsageError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # OSError, ValueError, SafetensorError, RuntimeError (shapes), tokenizers' Exception
        raise UsageError(f"cannot load model {name!r}: {_reason(exc)}; pass a folder written by this project "
                         "(such as <run>/checkpoints/best) or a Hugging Face model folder") from None
    finally:
        hf_logging.set_verbosity(verbosity)


def load_tokenizer(name: str):
    """The tokenizer of `minilm`, a model folder or a Hub id: read before the data, and long before the weights."""
    from transformers import AutoTokenizer

    from models import resolve_model_path

    check_model_source(name)
    return _loading(name, lambda: AutoTokenizer.from_pretrained(resolve_model_path(name)))


def load_model(name: str, loader=None, **kwargs):
    """`loader(name, **kwargs)` (default: `ColaModel(model_name=name, ...)`) after `check_model_source`, with a
    loading failure as a one-line UsageError. The classifier head a pretrained encoder lacks is reported in one
    line instead of transformers' load table."""
    if loader is None:  # imported here only: the training side (torchmetrics) would cost predict.py 5 s of start-up
        from models import ColaModel

        def loader(name, **kwargs):
            return ColaModel(model_name=name, **kwargs)

    check_model_source(name)
    model = _loading(name, lambda: loader(name, **kwargs))
    info = getattr(model, "loading_info", None) or {}
    missing = sorted(info.get("missing_keys", ()))
    if missing:
        fresh = all(k.startswith(("classifier.", "pooler.", "score.")) for k in missing)
        print(f"model {name}: {'a new classification head' if fresh else 'weights missing from the checkpoint'}"
              f" ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}) initialised at random"
              f"{'; it is trained now' if fresh else ''}", file=sys.stderr)
    return model


def finalize_logger(logger, status: str) -> None:
    """Finish every backend (a second call is harmless). A backend that stopped answering may leave threads and
    exit handlers that never return: then the process is made to exit promptly once its output is out."""
    global _HARD_EXIT
    logger.finalize(status)
    if any(getattr(backend, "hung", False) for backend in logger.backends()):
        _HARD_EXIT = True


_HARD_EXIT = False
EXIT_GRACE_S = 20.0


def exit(code: int) -> None:
    """End the script with `code`. Exit handlers (W&B's among them) get `EXIT_GRACE_S` seconds; after that, or at
    once when a tracking backend hung, the process ends regardless, so it never outlives its last line by long."""
    import threading

    sys.stdout.flush()
    sys.stderr.flush()
    if _HARD_EXIT:
        os._exit(code)
    watchdog = threading.Timer(EXIT_GRACE_S, os._exit, args=(code,))
    watchdog.daemon = True
    watchdog.start()
    sys.exit(code)


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a script's `main`, turning the errors a user can fix into one line on stderr and exit code 2."""
    from data import DataError

    try:
        return main(argv)
    except (UsageError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted (Ctrl-C) before the run started; nothing was recorded", file=sys.stderr)
        return EXIT_INTERRUPTED
