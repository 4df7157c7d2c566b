"""Resumable checkpoints: what must be saved for a killed run to continue bit for bit, and atomic folder writes.

A checkpoint is a folder with `model.safetensors` (the module's weights) and `trainer_state.pt` (optimizer,
scheduler, position in the epoch, RNG states, callback and logger state), read back with
`torch.load(weights_only=True)`: plain tensors and containers only, never code.
"""
from __future__ import annotations

import os
import random
import shutil

import numpy as np
import torch

STATE_FILE = "trainer_state.pt"
WEIGHTS_FILE = "model.safetensors"


def replace_dir(write, path: str) -> None:
    """Call `write(tmp)` to fill a fresh folder beside `path`, then swap it in with renames: a crash at any moment
    leaves either the old folder or the new one under `path` (or `path.old` while the swap is under way). When the
    writing fails (a full disk), the half-written folder is removed and the old one stays."""
    tmp, old = f"{path}.tmp", f"{path}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        write(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if os.path.exists(path):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


def rng_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": [kind, keys.tolist(), pos, has_gauss, cached]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def find_resumable(path: str) -> str | None:
    """`path` itself when it holds a resumable checkpoint, else `path/checkpoints/last`; either one's `.old` copy
    when a kill came between the two renames of `replace_dir`."""
    last = os.path.join(path, "checkpoints", "last")
    for candidate in (path, last, f"{path.rstrip(os.sep)}.old", f"{last}.old"):
        if os.path.isfile(os.path.join(candidate, STATE_FILE)):
            return candidate
    return None


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the module it is loaded into."""


def load_state(path: str) -> dict:
    return torch.load(os.path.join(path, STATE_FILE), map_location="cpu", weights_only=True)


def check_compatible(path: str, module: torch.nn.Module) -> None:
    """Raise CheckpointError unless `path`'s weights have exactly the module's tensor names and shapes (read from
    the safetensors header only: nothing is loaded)."""
    from safetensors import safe_open

    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    try:
        with safe_open(os.path.join(path, WEIGHTS_FILE), framework="pt") as f:
            found = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot read {WEIGHTS_FILE} ({str(exc).strip()[:200] or type(exc).__name__})")
    wrong = [f"{n} is {found[n]}, the model's {expected[n]}" for n in expected if n in found and found[n] != expected[n]]
    wrong += [f"{n} is not in the model" for n in found if n not in expected]
    # Names the module has but the file lacks are left to load_model: save_model keeps one of tied tensors.
    if wrong:
        more = f" and {len(wrong) - 1} more" if len(wrong) > 1 else ""
        raise CheckpointError(f"{path}: its weights do not fit this model ({wrong[0]}{more}); resume with the run's "
                              "own --model")
