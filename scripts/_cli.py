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
    """--logger and the W&B backend's options, shared by train.py and evaluate.py."""
    p.add_argument("--logger", type=logger_spec, default="csv",
                   help="tracking backends, comma-separated: csv, wandb, tensorboard, none (default: %(default)s)")
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


def logger_options(args, run_name: str) -> dict:
    return {"project": args.wandb_project, "entity": args.wandb_entity, "mode": args.wandb_mode,
            "run_name": run_name, "tags": args.wandb_tags, "confusion_matrix": args.confusion_matrix,
            "timeout": args.logger_timeout}


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
    from models import ColaModel

    check_model_source(name)
    model = _loading(name, lambda: loader(name, **kwargs) if loader else ColaModel(model_name=name, **kwargs))
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
    backends = getattr(logger, "loggers", [logger])
    if any(getattr(b, "hung", False) for b in backends):
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
