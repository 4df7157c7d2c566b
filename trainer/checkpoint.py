"""Resumable checkpoints: what must be saved for a killed run to continue bit for bit (`save_resumable`,
`load_resumable`: `Trainer.save_state` and `fit(ckpt_path=...)`), and atomic folder writes.

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

from tracking.files import first_line

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


def save_resumable(trainer, path: str, batches_done: int, outputs: list) -> None:
    """`Trainer.save_state`: write `trainer`'s resumable checkpoint to `path` (on the main process, atomically)."""
    from accelerate.utils import gather_object
    from safetensors.torch import save_model

    trainer._check_loss()
    # What differs from process to process (its RNG, its share of the epoch's sums); the main process's own also at
    # the top level, as a one-process checkpoint has it
    own = {"rng": rng_state(), "results": trainer._results.state_dict(), "outputs": outputs,
           "bad_loss": trainer._bad_loss}
    state = {
        "global_step": trainer.global_step, "epoch": trainer.current_epoch, "batches_done": batches_done,
        "optimizer": trainer.optimizer.state_dict(),
        "lr_scheduler": trainer.lr_scheduler.state_dict() if trainer.lr_scheduler is not None else None,
        **own, "callback_metrics": dict(trainer.callback_metrics),
        "callbacks": [cb.state_dict() if hasattr(cb, "state_dict") else None for cb in trainer.callbacks],
        "loggers": {backend.name: backend.state_dict() for backend in trainer.logger.backends()},
    }
    if trainer.accelerator.num_processes > 1:
        state["processes"] = gather_object([own])
    if trainer.is_main_process:
        def write(tmp):
            save_model(trainer._unwrapped(), os.path.join(tmp, WEIGHTS_FILE))
            torch.save(state, os.path.join(tmp, STATE_FILE))

        replace_dir(write, path)
    trainer.accelerator.wait_for_everyone()
    trainer.last_state_path, trainer.last_state_step = path, trainer.global_step


def _read_resumable(path: str, module: torch.nn.Module) -> tuple[dict, bytes]:
    """(trainer state, weights file bytes) of the resumable checkpoint `path`, read on the main process."""
    try:
        check_compatible(path, module)
        with open(os.path.join(path, WEIGHTS_FILE), "rb") as f:
            return load_state(path), f.read()
    except CheckpointError:
        raise
    except Exception as exc:  # truncated files, a damaged header
        raise CheckpointError(f"{path}: cannot resume from it ({first_line(exc, limit=200)})") from exc


def load_resumable(trainer, path: str) -> None:
    """Continue `trainer` from the resumable checkpoint `path`. Only the main process reads it (with several
    machines, the run folder is on the main one's disk); every process gets its contents over the process group."""
    import tempfile

    from accelerate.utils import send_to_device
    from safetensors.torch import load_model

    state, weights = trainer.on_main(lambda: _read_resumable(path, trainer._unwrapped()))
    try:
        with tempfile.NamedTemporaryFile(suffix=".safetensors") as copy:  # load_model reads a file: handles tied
            copy.write(weights)                                          # weights as save_model wrote them
            copy.flush()
            device = trainer.accelerator.device  # "cpu:0" under a CPU process group: safetensors wants "cpu"
            load_model(trainer._unwrapped(), copy.name, device="cpu" if device.type == "cpu" else str(device))
        trainer.optimizer.load_state_dict(state["optimizer"])
        if trainer.lr_scheduler is not None and state["lr_scheduler"] is not None:
            trainer.lr_scheduler.load_state_dict(state["lr_scheduler"])
    except Exception as exc:  # an optimizer of another shape
        raise CheckpointError(f"{path}: cannot resume from it ({first_line(exc, limit=200)})") from exc
    trainer.last_state_path, trainer.last_state_step = path, state["global_step"]
    trainer.global_step, trainer.current_epoch = state["global_step"], state["epoch"]
    trainer.callback_metrics = dict(state["callback_metrics"])
    processes = state.get("processes") or []  # this process's own part, when it was saved with as many processes
    index, count = trainer.accelerator.process_index, trainer.accelerator.num_processes
    own = processes[index] if len(processes) == count else state
    device = trainer.accelerator.device  # the state was read onto the CPU; the epoch goes on where the model is
    trainer._bad_loss = send_to_device(own["bad_loss"], device)
    trainer._results.load_state_dict(send_to_device(own["results"], device))
    for callback, callback_state in zip(trainer.callbacks, state["callbacks"]):
        if callback_state is not None and hasattr(callback, "load_state_dict"):
            callback.load_state_dict(callback_state)
    for backend in trainer.logger.backends():  # by name: the loggers may change on resume (--logger csv,wandb)
        backend.load_state_dict(state.get("loggers", {}).get(backend.name, {}))  # {}: it was not logging
    trainer._resume = {"batches_done": state["batches_done"], "outputs": send_to_device(own["outputs"], device),
                       "rng": own["rng"]}


def restore_rng_after_first_batch(batches, rng: dict):
    """Starting a DataLoader iterator draws from torch's global RNG; the interrupted run drew at the start of the
    epoch, before its checkpoint. So restore the RNG states only once the new iterator has started."""
    iterator = iter(batches)
    first = next(iterator, None)
    set_rng_state(rng)
    if first is not None:
        yield first
        yield from iterator
