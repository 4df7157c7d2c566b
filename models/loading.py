"""Loading a tokenizer, a classifier or a predictor from `minilm`, a model folder or a Hub id, with every way that
can fail (a folder that is not a model, missing or damaged weights, a pickle that carries code, a Hub that cannot be
reached) as one `ModelError` line, before any weights are read where that can be known."""
from __future__ import annotations

import os

from data.hub import require_hub
from models.pretrained import MINILM, resolve_model_path
from tracking.files import first_line


class ModelError(ValueError):
    """A model or checkpoint that cannot be loaded, or that does not fit the data."""


def check_model_source(name: str) -> None:
    """`minilm`, a local folder with a config.json, or a Hub id the Hub can serve; anything else is refused before
    any weights are read."""
    if name == MINILM:
        return
    if os.path.isdir(name):
        if not os.path.isfile(os.path.join(name, "config.json")):
            raise ModelError(f"{name}: not a Hugging Face model folder (no config.json); pass a folder written by "
                             "save_pretrained, such as <run>/checkpoints/best")
        return
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or os.sep in name.replace("/", "", 1):
        raise ModelError(f"model folder {name!r} does not exist; pass an existing folder, a Hub id or '{MINILM}'")
    require_hub(name, "model", f"pass a local model folder or --model {MINILM} (weights shipped with the install)")


def _loading(name: str, load):
    """`load()` with transformers' own load report and progress bars silenced, and any failure to read the files
    (missing, truncated, a damaged header, tensors of the wrong shape, a broken tokenizer file) as one ModelError.
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
        raise ModelError(f"cannot load model {name!r}: its weights are a pickle that carries code, which is never "
                         "run; convert the checkpoint to safetensors from a trusted source") from None
    except (ModelError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # OSError, ValueError, SafetensorError, RuntimeError (shapes), tokenizers' Exception
        raise ModelError(f"cannot load model {name!r}: {first_line(exc)}; pass a folder written by this project "
                         "(such as <run>/checkpoints/best) or a Hugging Face model folder") from None
    finally:
        hf_logging.set_verbosity(verbosity)


def load_tokenizer(name: str):
    """The tokenizer of `minilm`, a model folder or a Hub id: read before the data, and long before the weights."""
    from transformers import AutoTokenizer

    check_model_source(name)
    return _loading(name, lambda: AutoTokenizer.from_pretrained(resolve_model_path(name)))


def load_classifier(name: str, **kwargs):
    """A `SequenceClassifier(model_name=name, **kwargs)`, with a loading failure as one ModelError line."""
    from models.classifier import SequenceClassifier  # here only: predict.py must not import the training side

    check_model_source(name)
    return _loading(name, lambda: SequenceClassifier(model_name=name, **kwargs))


def load_predictor(name: str, **kwargs):
    """A `Predictor(name, **kwargs)`, with a loading failure as one ModelError line."""
    from models.predictor import Predictor

    check_model_source(name)
    return _loading(name, lambda: Predictor(name, **kwargs))


def fresh_weights(model, name: str) -> str | None:
    """One line on the weights `name` lacked and that were initialised at random (a pretrained encoder's new
    classification head), instead of transformers' load table; None when nothing was missing."""
    missing = sorted((getattr(model, "loading_info", None) or {}).get("missing_keys", ()))
    if not missing:
        return None
    fresh = all(k.startswith(("classifier.", "pooler.", "score.")) for k in missing)
    return (f"model {name}: {'a new classification head' if fresh else 'weights missing from the checkpoint'}"
            f" ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}) initialised at random"
            f"{'; it is trained now' if fresh else ''}")


def checkpoint_labels(path: str, keep_defaults: bool = False) -> tuple[str, ...] | None:
    """A model folder's class names, None where they are transformers' defaults (LABEL_0, LABEL_1, ...) unless
    `keep_defaults`."""
    from transformers import AutoConfig

    check_model_source(path)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot load model {path!r}: {first_line(exc)}") from None
    names = tuple(str(config.id2label[i]) for i in range(config.num_labels))
    return None if names == tuple(f"LABEL_{i}" for i in range(len(names))) and not keep_defaults else names


def match_model_to_data(model, source, name: str) -> None:
    """A loaded classifier set up for `source`: the same number of classes (else a ModelError), the data's class
    names where the model has only transformers' defaults, and the task's extra metrics."""
    from models.tasks import model_options

    if len(model.label_names) != len(source.label_names):
        raise ModelError(f"{name} has {len(model.label_names)} classes and the data {len(source.label_names)} "
                         f"({', '.join(source.label_names)}); pass the data it was trained on")
    if model.label_names != list(source.label_names):  # LABEL_0, LABEL_1, ...: name them as the data does
        model.label_names = list(source.label_names)
        model.model.config.id2label = dict(enumerate(model.label_names))
        model.model.config.label2id = {n: i for i, n in enumerate(model.label_names)}
    model.f1_positive = model_options(source)["f1_positive"]
