"""Whole training steps captured once per batch shape and replayed: `Trainer(step_graphs="cuda")`, `--cuda-graphs on`.

What one replay does, with no Python of the step running and no host synchronisation:

    zero the gradients (in place: the same tensors every step)
    out = module.training_step(static batch)         # forward, loss, what it logs
    epoch sums of what it logged += value * batch    # Results adds in place (trainer/results.py)
    remember a non-finite loss and its step          # Trainer._watch_loss, the step read from a device tensor
    backward; clip the gradient norm
    optimizer.step() with the learning rate read from a device tensor per parameter group
    copy the loss and the logged values into fixed tensors

Around a replay, on the host: copy the batch into the graph's input tensors, fill the learning-rate tensors with
the scheduler's values and the step tensor with the step number, replay, then do what the step's Python did once
when it was captured (the logged names into `Results.step`, the batch counts of the epoch sums). The loop then
steps the scheduler and counts the step as after an eager one.

A shape is captured the second time an epoch meets it (so the one short batch an epoch ends with stays eager; pad
training batches to a few lengths: the data module's `pad_to_multiple_of`), at most `max_graphs` shapes. Capturing
runs the step for real (warm-up; the trace backend too): the weights, optimizer state, epoch sums, the non-finite
watch and the RNG states are saved before and put back after, so the run goes on as if the step had not been
captured. Optimizer state that did not exist yet is reset to zero, as Adam-style optimizers start.

Backends: "cuda" captures a `torch.cuda.CUDAGraph` (after warm-up on a side stream, as torch's CUDA graph notes
ask). "trace" records the same step with `make_fx` on real tensors: a graph of aten operations over fixed tensors,
in which every Python value is frozen at capture as in a CUDA graph. It runs on any device, and is how the CPU tests
check everything here but the CUDA graph itself.

A step cannot be captured (`refusal` says why, in a line) with gradient accumulation, several processes, fp16's
loss scaling, an optimizer without a `capturable` option, or an `on_before_optimizer_step` hook (it would have to run
inside the step). A replayed step does not call `training_step`: it must not depend on `batch_idx` or change Python
state other than through `self.log`.
"""
from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any, Callable

import torch

from tracking.files import first_line
from trainer.checkpoint import rng_state, set_rng_state

BACKENDS = ("cuda", "trace")
# The number of optimizer steps from which `step_graphs="auto"` (--cuda-graphs auto) captures on a GPU: the capture's
# cost over what a replay saves a step, measured by benchmarks/gpu_check.sh on today's code. None: not yet measured
# for whole-step graphs, so auto stays eager.
BREAK_EVEN_STEPS: int | None = None


def resolve(mode: str | None, trainer) -> str | None:
    """The backend `Trainer(step_graphs=mode)` uses: `mode` itself, or for "auto", "cuda" when the trainer runs on a
    CUDA device, its set-up can be captured (`refusal`) and it will take at least BREAK_EVEN_STEPS steps; else None."""
    if mode != "auto":
        return mode
    if trainer.accelerator.device.type != "cuda" or BREAK_EVEN_STEPS is None or refusal(trainer):
        return None
    return "cuda" if trainer.estimated_stepping_batches >= BREAK_EVEN_STEPS else None


def _capture_cuda(fn: Callable[[], None], warmup: int = 2) -> Callable[[], None]:
    """A CUDA graph of `fn`, after `warmup` eager runs on a side stream (cuBLAS workspaces, autograd's streams)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # a pool of its own: graphs of other shapes never see its memory. thread_local: a logger's thread may use CUDA
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        fn()
    return graph.replay


def _capture_trace(fn: Callable[[], None]) -> Callable[[], None]:
    """`fn` recorded by make_fx on real tensors (running it once): a GraphModule of aten operations on the very
    tensors `fn` read and wrote, replayed by calling it. While it records, `torch.cuda.is_current_stream_capturing()`
    answers True, as under a CUDA capture, so code that avoids a host read while capturing (transformers' attention
    mask) takes the path it takes there; a host read left in the step is an error here as it is there."""
    from unittest import mock

    from torch.fx.experimental.proxy_tensor import make_fx

    with mock.patch.object(torch.cuda, "is_current_stream_capturing", lambda: True):
        graph = make_fx(fn, tracing_mode="real")()

    def replay() -> None:
        with torch.no_grad():  # the backward is in the graph: autograd must not record the replay (a CUDA graph's
            graph()            # replay is one launch that autograd never sees)

    replay.graph = graph
    return replay


def refusal(trainer) -> str | None:
    """Why `trainer`'s set-up cannot run as step graphs, in a line; None when it can."""
    from trainer.callbacks import Callback
    from trainer.module import TrainerModule

    if trainer.accumulate_grad_batches > 1:
        return "graph steps need accumulate_grad_batches=1 (a replay would overwrite gradients being accumulated)"
    if trainer.accelerator.num_processes > 1:
        return "graph steps run in one process only (not verified with DistributedDataParallel)"
    if trainer.accelerator.scaler is not None:
        return "graph steps do not run with fp16 loss scaling (a skipped step needs the host); use bf16 or 32"
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    if not all("capturable" in group for group in optimizer.param_groups):
        return f"graph steps need an optimizer with a capturable option (Adam, AdamW), not {type(optimizer).__name__}"
    plain = {getattr(base, "on_before_optimizer_step", None) for base in (TrainerModule, Callback)}
    hooked = [type(o).__name__ for o in (trainer.module, *trainer.callbacks)
              if callable(getattr(o, "on_before_optimizer_step", None))
              and getattr(type(o), "on_before_optimizer_step", None) not in plain]
    if hooked:
        return f"graph steps cannot run on_before_optimizer_step ({', '.join(hooked)}) inside the step"
    return None


class _Graph:
    """One captured shape: its input tensors, its replay, and what the step's Python did once."""

    def __init__(self, inputs: dict[str, torch.Tensor]) -> None:
        self.inputs = inputs
        self.replay: Callable[[], Any] | None = None
        self.step_values: dict[str, torch.Tensor] = {}  # Results.step after the step: name -> fixed tensor
        self.counts: dict[str, int] = {}  # Results.epoch name -> batch count the step added
        self.prog_bar: set[str] = set()
        self.output: Any = None  # training_step's result, its tensors fixed


class StepGraphs:
    def __init__(self, trainer, backend: str = "cuda", max_graphs: int = 16) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"step graph backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        why = refusal(trainer)
        if why:
            raise ValueError(why)
        self.trainer, self.backend, self.max_graphs = trainer, backend, max_graphs
        self.optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
        device = trainer.accelerator.device
        self.lrs = [torch.zeros((), device=device) for _ in self.optimizer.param_groups]  # fp32, as torch keeps lr
        self.step = torch.zeros((), device=device)  # the step number the non-finite watch records
        self.graphs: dict[tuple, _Graph] = {}
        self.fixed: dict[str, torch.Tensor] = {}  # what a replay writes its results into, by name
        self.grads: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # (parameter, its gradient), fixed
        self._seen: dict[tuple, int] = {}
        self.captures: list[tuple] = []  # the shapes captured, in order
        self.capture_seconds = 0.0
        self.replays = 0

    # --- the loop's side ------------------------------------------------------------------------------------
    def new_epoch(self) -> None:
        self._seen.clear()

    def run(self, batch: dict, batch_idx: int) -> Any:
        """Train on `batch` with a replay and return training_step's (fixed) output; None: run this batch eagerly."""
        key = self._key(batch)
        graph = self.graphs.get(key)
        if graph is None:
            self._seen[key] = self._seen.get(key, 0) + 1
            if key is None or self._seen[key] < 2 or len(self.graphs) >= self.max_graphs:
                return None
            graph = self._capture(key, batch, batch_idx)
        for name, tensor in graph.inputs.items():
            tensor.copy_(batch[name], non_blocking=True)
        self._feed()
        graph.replay()
        results = self.trainer._results
        results.step.update(graph.step_values)
        results.prog_bar |= graph.prog_bar
        for name, count in graph.counts.items():
            results.epoch[name].count += count
        self.replays += 1
        return graph.output

    def summary(self) -> str:
        shapes = ", ".join("x".join(map(str, shape)) for shape in self.captures) or "none"
        return (f"step graphs ({self.backend}): {len(self.captures)} shapes captured ({shapes}) in "
                f"{self.capture_seconds:.2f} s, {self.replays} steps replayed")

    @staticmethod
    def _key(batch) -> tuple | None:
        if not isinstance(batch, Mapping) or not all(isinstance(v, torch.Tensor) for v in batch.values()):
            return None  # only mappings of tensors (a collator's BatchEncoding) are copied into a graph's inputs
        return tuple(sorted((k, tuple(v.shape), v.dtype) for k, v in batch.items()))

    def _feed(self) -> None:
        """The values Python would have passed this step: learning rates and the step number (fills, no copies)."""
        for tensor, group in zip(self.lrs, self.optimizer.param_groups):
            tensor.fill_(float(group["lr"]))
        self.step.fill_(float(self.trainer.global_step + 1))

    # --- capture --------------------------------------------------------------------------------------------
    def _capture(self, key: tuple, batch: dict, batch_idx: int) -> _Graph:
        start = time.perf_counter()
        graph = _Graph({name: value.clone() for name, value in batch.items()})
        saved = self._save()
        self._feed()
        run = functools.partial(self._step, graph, batch_idx)
        run()  # eagerly first: optimizer state, gradients and epoch sums are made outside any capture
        try:
            graph.replay = _capture_cuda(run) if self.backend == "cuda" else _capture_trace(run)
        except Exception as exc:
            shape = "x".join(map(str, batch["input_ids"].shape)) if "input_ids" in batch else "a batch"
            raise RuntimeError(
                f"capturing the training step of {shape} failed ({first_line(exc, limit=160)}): the step must not "
                "read a value back to the host (.item(), float(), a Python `if` on a tensor); move that out of "
                "training_step, or train without step graphs") from exc
        finally:
            self._restore(saved)
        self.graphs[key] = graph
        self.captures.append(tuple(batch["input_ids"].shape) if "input_ids" in batch else key)
        self.capture_seconds += time.perf_counter() - start
        return graph

    def _step(self, graph: _Graph, batch_idx: int) -> None:
        """The step that is captured: what the trainer does for an eager batch, with tensors in place of Python
        values. Run eagerly once, then under capture; its Python never runs again."""
        trainer, results = self.trainer, self.trainer._results
        if self.grads is not None:  # the same gradient tensors for every shape (eager steps may have dropped them)
            for param, grad in self.grads:
                param.grad = grad
            torch._foreach_zero_([grad for _, grad in self.grads])
        counts = {name: entry.count for name, entry in results.epoch.items()}
        before = dict(results.step)
        out = trainer._call("training_step", graph.inputs, batch_idx)
        loss = out["loss"] if isinstance(out, dict) else out
        trainer._watch_loss(loss, step=self.step)
        trainer.accelerator.backward(loss)
        trainer._clip_gradients()
        floats = [(group["lr"], group["capturable"]) for group in self.optimizer.param_groups]
        # capturable while capturing only: torch warns when a capturable optimizer steps uncaptured (the eager run)
        capturing = self.backend == "trace" or torch.cuda.is_current_stream_capturing()
        for group, lr in zip(self.optimizer.param_groups, self.lrs):
            group["lr"], group["capturable"] = lr, capturing or group["capturable"]
        try:
            trainer.optimizer.step()
        finally:
            for group, (lr, capturable) in zip(self.optimizer.param_groups, floats):
                group["lr"], group["capturable"] = lr, capturable
        if self.grads is None:  # the first run made them: every later run and replay zeroes and fills these
            self.grads = [(p, p.grad) for group in self.optimizer.param_groups for p in group["params"]
                          if p.grad is not None]
        logged = [name for name, entry in results.epoch.items() if entry.count != counts.get(name, 0)]
        metrics = [name for name in logged if hasattr(results.epoch[name].total, "compute")]
        if metrics:
            raise RuntimeError(f"graph steps cannot update a torchmetrics Metric in training_step ({metrics[0]}): "
                               "log a tensor, or train without step graphs")
        elsewhere = [name for name in logged if results.epoch[name].total.device != self.step.device]
        if elsewhere:  # a Python number logged: its sum would be on the CPU, which a graph does not replay
            raise RuntimeError(f"graph steps need training_step to log tensors on {self.step.device}, not "
                               f"{elsewhere[0]} (a Python number?); log a tensor, or train without step graphs")
        graph.step_values = {name: self._fix(f"step:{name}", value) for name, value in results.step.items()
                             if before.get(name) is not value}
        graph.output = ({k: self._fix(f"out:{k}", v) if isinstance(v, torch.Tensor) else v for k, v in out.items()}
                        if isinstance(out, dict) else self._fix("out", out))
        graph.counts = {name: results.epoch[name].count - counts.get(name, 0) for name in logged}
        graph.prog_bar = set(results.prog_bar)

    def _fix(self, name: str, value: Any) -> Any:
        """A fixed tensor holding `value` after every replay (made by the eager run, outside any capture)."""
        if not isinstance(value, torch.Tensor):
            return value
        value = value.detach()
        fixed = self.fixed.get(name)
        if fixed is None or fixed.shape != value.shape or fixed.dtype != value.dtype:
            fixed = self.fixed[name] = torch.empty_like(value)
        fixed.copy_(value)
        return fixed

    def _save(self) -> dict:
        trainer = self.trainer
        return {
            "params": [p.detach().clone() for group in self.optimizer.param_groups for p in group["params"]],
            "state": {id(p): {k: v.clone() for k, v in s.items() if isinstance(v, torch.Tensor)}
                      for p, s in self.optimizer.state.items()},
            "epoch": {name: (e.total.clone(), e.count) for name, e in trainer._results.epoch.items()
                      if isinstance(e.total, torch.Tensor)},
            "bad_loss": None if trainer._bad_loss is None else trainer._bad_loss.clone(),
            "rng": rng_state(), "step": dict(trainer._results.step),
        }

    @torch.no_grad()
    def _restore(self, saved: dict) -> None:
        """Undo what the runs during capture did, in place: the graph holds these very tensors."""
        trainer = self.trainer
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        torch._foreach_copy_(params, saved["params"])
        for p, state in self.optimizer.state.items():
            before = saved["state"].get(id(p), {})
            for k, v in state.items():
                if isinstance(v, torch.Tensor):
                    v.copy_(before[k]) if k in before else v.zero_()
        for name, entry in trainer._results.epoch.items():
            if isinstance(entry.total, torch.Tensor):
                total, entry.count = saved["epoch"].get(name, (None, 0))
                entry.total.copy_(total) if total is not None else entry.total.zero_()
        if trainer._bad_loss is not None:
            trainer._bad_loss.copy_(saved["bad_loss"]) if saved["bad_loss"] is not None else trainer._bad_loss.fill_(-1)
        set_rng_state(saved["rng"])
        trainer._results.step = saved["step"]
