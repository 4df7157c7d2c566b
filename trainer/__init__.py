"""A generic training loop on Accelerate with Lightning's hooks; it knows no dataset and no model family."""
from trainer.callbacks import BestScores, Callback, EarlyStopping, ModelCheckpoint
from trainer.module import TrainerModule
from trainer.trainer import NonFiniteLossError, Trainer


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (every device); with `deterministic`, also ask torch for deterministic
    algorithms. Call it before building the model so its freshly initialised weights are reproducible."""
    from accelerate.utils import set_seed

    set_seed(seed, deterministic=deterministic)


__all__ = ["BestScores", "Callback", "EarlyStopping", "ModelCheckpoint", "TrainerModule", "NonFiniteLossError", "Trainer", "seed_everything"]
