"""What the three scripts share: argument types, the one-line error exit, Hub reachability and run folders."""
from __future__ import annotations

import argparse
import datetime
import os
import sys
from typing import Callable

EXIT_USAGE = 2


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with a one-line error: what was wrong and where to look, no usage dump."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


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
                   help="tracking backends, comma-separated: csv, wandb, tensorboard, mlflow, none (default: "
                        "%(default)s)")
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
            "run_name": run_name, "tags": args.wandb_tags, "confusion_matrix": args.confusion_matrix,
            "mlflow_experiment": args.mlflow_experiment}


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


def data_source(data_dir: str | None) -> str | None:
    """The CoLA folder from --data-dir or $COLA_DIR; None means the Hub, which must then answer within seconds."""
    from data import HUB_DATASET, resolve_data_dir

    data_dir = resolve_data_dir(data_dir)
    if data_dir is None:
        require_hub(HUB_DATASET[0], "dataset", "pass --data-dir DIR with CoLA's train.tsv and dev.tsv (or set "
                    "COLA_DIR)")
    return data_dir


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


def load_model(name: str, loader=None, **kwargs):
    """`loader(name, **kwargs)` (default: `ColaModel(model_name=name, ...)`) after `check_model_source`, with a
    loading failure as a one-line UsageError. Weights load through safetensors or `torch.load(weights_only=True)`
    only (transformers' default), so a pickle that carries code is refused, never run."""
    import pickle

    from models import ColaModel

    check_model_source(name)
    try:
        return loader(name, **kwargs) if loader else ColaModel(model_name=name, **kwargs)
    except pickle.UnpicklingError:
        raise UsageError(f"cannot load model {name!r}: its weights are a pickle that carries code, which is never "
                         "run; convert the checkpoint to safetensors from a trusted source") from None
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot load model {name!r}: {str(exc).strip().splitlines()[0]}") from None


def new_run_dir(output_dir: str, run_name: str | None, prefix: str = "") -> str:
    """`<output_dir>/<run_name>`; a timestamped name by default. Refuses to write into an existing run."""
    name = run_name or prefix + datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(output_dir, name)
    if run_name is None:
        suffix = 1
        while os.path.exists(path):
            suffix += 1
            path = os.path.join(output_dir, f"{name}-{suffix}")
    elif os.path.exists(path) and os.listdir(path):
        raise UsageError(f"run folder {path} already exists and is not empty; choose another --run-name")
    return path


def resume_target(output_dir: str, run_name: str | None, resume: str) -> tuple[str, str | None]:
    """(run folder, checkpoint or None) for `--resume auto` or `--resume PATH`.

    auto: the run folder `<output_dir>/<run_name>`, or without --run-name the newest run folder that holds a
    resumable checkpoint; no checkpoint there yet means starting that run over. PATH: a run folder or a
    checkpoint folder inside one, which must hold a resumable checkpoint."""
    from trainer.checkpoint import find_resumable

    if resume != "auto":
        checkpoint = find_resumable(resume)
        if checkpoint is None:
            raise UsageError(f"{resume}: no resumable checkpoint there (trainer_state.pt); pass a run folder or its "
                             "checkpoints/last written with --save-every-n-steps")
        if os.path.normpath(checkpoint) == os.path.normpath(resume):  # a checkpoint folder: <run>/checkpoints/<name>
            return os.path.dirname(os.path.dirname(os.path.normpath(checkpoint))), checkpoint
        return resume, checkpoint
    if run_name:
        run_dir = os.path.join(output_dir, run_name)
        return run_dir, find_resumable(run_dir)
    candidates = [os.path.join(output_dir, d) for d in (os.listdir(output_dir) if os.path.isdir(output_dir) else [])]
    resumable = [d for d in candidates if find_resumable(d)]
    if not resumable:
        raise UsageError(f"--resume auto: no run in {output_dir} has a resumable checkpoint; pass --run-name to start "
                         "one, with --save-every-n-steps N")
    run_dir = max(resumable, key=lambda d: os.path.getmtime(os.path.join(d, "checkpoints", "last")))
    return run_dir, find_resumable(run_dir)


def shared_run_dir(accelerator, output_dir: str, run_name: str | None, prefix: str = "") -> str:
    """The main process names the run folder; every other process receives the same name."""
    from accelerate.utils import broadcast_object_list

    chosen = [new_run_dir(output_dir, run_name, prefix) if accelerator.is_main_process else None]
    if accelerator.num_processes > 1:
        broadcast_object_list(chosen)
    return chosen[0]


def run_main(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> int:
    """Run a script's `main`, turning the errors a user can fix into one line on stderr and exit code 2."""
    from data import DataError

    try:
        return main(argv)
    except (UsageError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
