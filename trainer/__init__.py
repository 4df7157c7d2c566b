"""A generic training loop on Accelerate with Lightning's hooks (trainer.py, module.py, callbacks.py), its resumable
checkpoints (checkpoint.py) and the run folder's lifecycle (run_folder.py); it knows no dataset and no model family."""
from trainer.callbacks import BestScores, Callback, EarlyStopping, ModelCheckpoint, Pruning, ValidationLine
from trainer.module import TrainerModule
from trainer.checkpoint import CheckpointError
from trainer.trainer import Interrupted, NonFiniteLossError, Trainer


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (every device); with `deterministic`, also ask torch for deterministic
    algorithms. Call it before building the model so its freshly initialised weights are reproducible.

    On a GPU, cuBLAS is deterministic only with a fixed workspace (CUBLAS_WORKSPACE_CONFIG, set here unless the user
    set it), and an operation with no deterministic CUDA kernel warns instead of stopping the run."""
    import os

    import torch
    from accelerate.utils import set_seed

    set_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: before any CUDA work
        torch.use_deterministic_algorithms(True, warn_only=True)
        # Deterministic mode also fills every new tensor with NaN (one more kernel per allocation, a host cost on a
        # GPU); that only guards against reading memory never written, which no result here depends on
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False


__all__ = ["BestScores", "Callback", "CheckpointError", "EarlyStopping", "Interrupted", "ModelCheckpoint", "Pruning",
           "TrainerModule", "NonFiniteLossError", "Trainer", "ValidationLine", "seed_everything"]
