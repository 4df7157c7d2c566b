"""What `self.log` collected: step values of the current batch and running epoch sums, kept on the device.

Nothing here calls `.item()` while a batch is processed; values become Python floats only when the trainer writes
a row (every `log_every_n_steps` and at epoch end). An epoch sum, once made, is the same tensor for the whole run:
it is added to and reset in place, so a training step replayed as a graph (`trainer/step_graph.py`) adds to it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

# Lightning's defaults: (on_step, on_epoch) by the hook that calls self.log.
_STEP_HOOKS = {"training_step", "on_train_batch_start", "on_train_batch_end", "on_before_optimizer_step"}


def infer_batch_size(batch: Any) -> int:
    """The first dimension of the first tensor found in the batch."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else 1
    if isinstance(batch, dict) or hasattr(batch, "values"):
        for value in batch.values():
            size = infer_batch_size(value)
            if size:
                return size
    if isinstance(batch, (list, tuple)):
        for value in batch:
            size = infer_batch_size(value)
            if size:
                return size
    return 0


@dataclass
class _EpochValue:
    total: Any = 0.0  # sum of value * batch_size (a tensor on the device) or a torchmetrics Metric
    count: Any = 0


@dataclass
class Results:
    step: dict[str, Any] = field(default_factory=dict)
    epoch: dict[str, _EpochValue] = field(default_factory=dict)
    prog_bar: set[str] = field(default_factory=set)
    batch: Any = None  # the current batch, for batch-size inference

    def log(self, hook, name, value, prog_bar, on_step, on_epoch, batch_size):
        if hook is None:
            raise RuntimeError("self.log() is only available inside a hook the Trainer calls")
        step_default = hook in _STEP_HOOKS
        on_step = step_default if on_step is None else on_step
        on_epoch = (not step_default) if on_epoch is None else on_epoch
        step_name, epoch_name = (f"{name}_step", f"{name}_epoch") if on_step and on_epoch else (name, name)
        is_metric = hasattr(value, "compute") and hasattr(value, "update")
        if on_step:
            step_value = value._forward_cache if is_metric else value
            self.step[step_name] = step_value.detach() if isinstance(step_value, torch.Tensor) else step_value
            if prog_bar:
                self.prog_bar.add(step_name)
        if on_epoch:
            if is_metric:
                self.epoch[epoch_name] = _EpochValue(total=value)
            else:
                size = batch_size if batch_size is not None else (infer_batch_size(self.batch) or 1)
                entry = self.epoch.setdefault(epoch_name, _EpochValue())
                value = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
                if isinstance(entry.total, torch.Tensor) and entry.total.device == value.device:
                    entry.total.add_(value.float() * size)
                else:
                    entry.total = value.float() * size + entry.total
                entry.count += size
            if prog_bar:
                self.prog_bar.add(epoch_name)

    def state_dict(self) -> dict:
        """Running epoch sums (tensors). Taken between training batches, where no torchmetrics Metric is pending."""
        return {"epoch": {name: [torch.as_tensor(e.total).clone(), e.count] for name, e in self.epoch.items()
                          if e.count and not hasattr(e.total, "compute")},
                "prog_bar": sorted(self.prog_bar)}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = {name: _EpochValue(total, count) for name, (total, count) in state["epoch"].items()}
        self.prog_bar = set(state["prog_bar"])

    def pop_step(self) -> dict[str, float]:
        values = {k: float(v) for k, v in self.step.items()}
        self.step.clear()
        return values

    def pop_epoch(self, reduce_sum) -> dict[str, float]:
        """Epoch values, summed across processes by `reduce_sum` first; Metrics are computed, then reset and dropped.
        Sums are zeroed in place and kept (a replayed step graph adds to them); one nothing was added to since is
        not an epoch value."""
        values = {}
        for name, entry in list(self.epoch.items()):
            if hasattr(entry.total, "compute"):
                values[name] = float(entry.total.compute())
                entry.total.reset()
                del self.epoch[name]
            elif entry.count:
                total = reduce_sum(torch.as_tensor(entry.total, dtype=torch.float64).reshape(1))
                count = reduce_sum(torch.tensor([float(entry.count)], dtype=torch.float64, device=total.device))
                values[name] = float(total / count)
                if isinstance(entry.total, torch.Tensor):
                    entry.total.zero_()
                else:
                    entry.total = 0.0
                entry.count = 0
        return values
