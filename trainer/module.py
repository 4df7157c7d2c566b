"""`TrainerModule`: the model-side half of the trainer contract, with PyTorch Lightning's method names.

A subclass defines `training_step`, `validation_step`, `configure_optimizers` and any of the hooks below, and calls
`self.log(...)` from them, which hands the value to `trainer.log`. The trainer calls the hooks; `trainer/trainer.py`
has the order. The epoch-end methods receive the epoch's step outputs only when a subclass overrides them.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class TrainerModule(nn.Module):
    """An `nn.Module` the `Trainer` drives. Hooks default to doing nothing."""

    def __init__(self) -> None:
        super().__init__()
        self._trainer = None  # the Trainer that drives this module

    # The trainer is not an nn.Module, so it is never saved, moved or counted as a parameter.
    @property
    def trainer(self):
        if self._trainer is None:
            raise RuntimeError(f"{type(self).__name__} is not attached to a Trainer yet")
        return self._trainer

    @trainer.setter
    def trainer(self, trainer) -> None:
        """Set by the `Trainer` that drives this module (Lightning's `module.trainer = trainer`)."""
        self._trainer = trainer

    @property
    def logger(self):
        """The run's `ExperimentLogger` (a no-op one on processes other than the main one)."""
        return self.trainer.logger

    @property
    def global_step(self) -> int:
        return self.trainer.global_step

    @property
    def current_epoch(self) -> int:
        return self.trainer.current_epoch

    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        batch_size: int | None = None,
    ) -> None:
        """Record a scalar or a torchmetrics `Metric` with Lightning's defaults: on_step in `training_step`,
        on_epoch everywhere else; with both, the logger receives `<name>_step` and `<name>_epoch`. Epoch values are
        means weighted by batch size (inferred from the batch unless given); a `Metric` is computed over the epoch."""
        self.trainer.log(name, value, prog_bar=prog_bar, on_step=on_step, on_epoch=on_epoch, batch_size=batch_size)

    def log_dict(self, metrics: dict, **kwargs: Any) -> None:
        for name, value in metrics.items():
            self.log(name, value, **kwargs)

    def all_gather_for_metrics(self, data: Any) -> Any:
        """Tensors (or nested dicts/tuples of them) from every process, without the duplicates that distributed
        samplers add to fill the last batch. A no-op with one process."""
        return self.trainer.accelerator.gather_for_metrics(data)

    # --- steps ------------------------------------------------------------------------------------------------
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | dict:
        raise NotImplementedError(f"{type(self).__name__} must define training_step(batch, batch_idx)")

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        return None

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        return None

    def training_epoch_end(self, outputs: list) -> None:
        pass

    def validation_epoch_end(self, outputs: list) -> None:
        pass

    def test_epoch_end(self, outputs: list) -> None:
        pass

    def configure_optimizers(self):
        """An optimizer, or `{"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"|"epoch"}}`."""
        raise NotImplementedError(f"{type(self).__name__} must define configure_optimizers()")

    def save_pretrained(self, path: str) -> None:
        """Write the model to a folder; the default is a safetensors file of the state dict."""
        import os

        from safetensors.torch import save_model

        os.makedirs(path, exist_ok=True)
        save_model(self, os.path.join(path, "model.safetensors"))
