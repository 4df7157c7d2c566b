"""The training loop: a hand-written `fit -> train epoch -> validation epoch` on Hugging Face Accelerate.

Every hook name is PyTorch Lightning's. `module` is a `TrainerModule`; `cb` is each callback in order; `call(h)`
runs `module.h(...)` and then `cb.h(trainer, module, ...)` for every object that defines `h` (one dispatcher,
`Trainer._call`; the module's `*_step` methods go through Accelerate's prepared wrapper). `self.log` in the module is
`trainer.log`, which picks Lightning's defaults from the hook under way.

    fit(module, train_dataloader, val_dataloader, ckpt_path=None):
        if ckpt_path: load the state, then skip the batches of its epoch already trained
        call(on_fit_start); call(on_train_start)
        for epoch in range(max_epochs):
            module.train()                                  # every epoch: from_pretrained() returns eval mode
            call(on_train_epoch_start)
            for batch_idx, batch in train batches:
                call(on_train_batch_start, batch, batch_idx)
                step_graphs and a captured shape: one graph replays training_step, backward, clipping and
                    optimizer.step (trainer/step_graph.py); then scheduler.step() and the rest as below
                with accelerator.accumulate(module):
                    loss = module.training_step(batch, batch_idx)        # self.log: on_step by default
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:                       # the last micro-batch of a step
                        clip gradients; call(on_before_optimizer_step, optimizer)
                        optimizer.step(); scheduler.step(); optimizer.zero_grad(); global_step += 1
                        every log_every_n_steps: write step metrics at global_step
                call(on_train_batch_end, outputs, batch, batch_idx)   # outputs kept only for an overridden
                                                                    # training_epoch_end
                every log_every_n_steps batches: move the progress bar (no per-batch host work)
                every save_every_n_steps steps: save_state(checkpoints/last)     # resumable, written atomically
                if global_step reached max_steps or should_stop: leave the epoch
            module.training_epoch_end(outputs)
            call(on_train_epoch_end); write train epoch metrics
            validation loop (module.eval(), torch.no_grad()):
                call(on_validation_start); call(on_validation_epoch_start)
                for batch_idx, batch: call(on_validation_batch_start, ...); out = module.validation_step(...)
                                      call(on_validation_batch_end, out, batch, batch_idx)
                module.validation_epoch_end(outputs)                      # self.log: on_epoch by default
                call(on_validation_epoch_end); write validation epoch metrics -> trainer.callback_metrics
                call(on_validation_end)                                   # checkpointing, early stopping
            if should_stop (a callback asked) or max_steps reached: break
        call(on_train_end); call(on_fit_end)

`validate()` and `test()` run the same evaluation loop alone (test uses `test_step`/`test_epoch_end`/`on_test_*`).
Only the main process writes: the logger given to a non-main process is a no-op one (see `tracking.factory`).
The trainer only logs through `self.logger`; whoever built the logger opens and finalizes it (the scripts do), so
`fit` followed by `test` logs to one open logger.

A non-finite training loss is remembered on the device and read back only when a row is written and before any
checkpoint is written: no checkpoint is ever taken after it, and `NonFiniteLossError` stops the run.
"""
from __future__ import annotations

import math
import os
from typing import Any, Callable, Sequence

import torch
from torch.utils.data import DataLoader

from trainer.callbacks import Callback
from trainer.checkpoint import (CheckpointError, load_resumable, replace_dir, restore_rng_after_first_batch,
                                save_resumable)
from trainer.module import TrainerModule
from trainer.results import Results
from trainer.step_graph import BACKENDS, StepGraphs, resolve

_STEP_METHODS = ("training_step", "validation_step", "test_step")
_PRECISION = {"32": "no", "32-true": "no", "bf16": "bf16", "bf16-mixed": "bf16", "16": "fp16", "16-mixed": "fp16"}


class _LimitedBatchSampler:
    """The first `limit` batches of another batch sampler (for `limit_train_batches`). Limiting the sampler,
    rather than breaking out of the loop, lets Accelerate see the end of the data and finish an accumulation."""

    def __init__(self, batch_sampler, limit: int) -> None:
        self.batch_sampler, self.limit = batch_sampler, limit

    def __iter__(self):
        for i, batch in enumerate(self.batch_sampler):
            if i >= self.limit:
                return
            yield batch

    def __len__(self) -> int:
        return min(len(self.batch_sampler), self.limit)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.batch_sampler, "set_epoch"):
            self.batch_sampler.set_epoch(epoch)


def _limit(dataloader: DataLoader, limit: int | None) -> DataLoader:
    if limit is None or limit >= len(dataloader):
        return dataloader
    return DataLoader(
        dataloader.dataset,
        batch_sampler=_LimitedBatchSampler(dataloader.batch_sampler, limit),
        collate_fn=dataloader.collate_fn,
        num_workers=dataloader.num_workers,
        pin_memory=dataloader.pin_memory,
    )


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; training stopped at `step`."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(f"the training loss became {value} at step {step}; training stopped")
        self.step, self.value = step, value


class Interrupted(BaseException):
    """The run was asked to stop from outside (`request_stop`: SIGTERM, a cluster preempting the job) and stopped at a
    step boundary, after writing a resumable checkpoint where the run writes them. A BaseException, like
    KeyboardInterrupt, so that no `except Exception` swallows it."""

    def __init__(self, reason: str = "SIGTERM", step: int | None = None) -> None:
        super().__init__(reason)
        self.signal_name, self.step = reason, step


class _StepDispatch(torch.nn.Module):
    """Makes `training_step` and friends the wrapper's `forward`, as Lightning does: a step called on a bare
    module would bypass DistributedDataParallel's gradient synchronisation and Accelerate's autocast."""

    def __init__(self, module: TrainerModule) -> None:
        super().__init__()
        self.module = module

    def forward(self, step: str, *args: Any) -> Any:
        return getattr(self.module, step)(*args)


class Trainer:
    def __init__(
        self,
        max_epochs: int = 3,
        max_steps: int = -1,
        limit_train_batches: int | None = None,
        limit_val_batches: int | None = None,
        log_every_n_steps: int = 10,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: float | None = None,
        precision: str = "32",
        callbacks: Sequence[Callback] = (),
        logger=None,
        default_root_dir: str = ".",
        enable_progress_bar: bool = True,
        save_every_n_steps: int | None = None,
        cpu: bool = False,
        step_graphs: str | None = None,
    ) -> None:
        """`save_every_n_steps` writes a resumable checkpoint to `<default_root_dir>/checkpoints/last` every that
        many optimizer steps; `fit(..., ckpt_path=...)` continues from one. `step_graphs`: "cuda" captures each
        training step whole as a CUDA graph per batch shape and replays it ("trace": the same on any device, with
        make_fx; "auto": "cuda" for runs long enough to pay for the capture; see `trainer/step_graph.py`); None:
        eager steps."""
        from accelerate import Accelerator
        from accelerate.utils import AutocastKwargs, DataLoaderConfiguration

        from tracking import NoOpLogger

        if precision not in _PRECISION:
            raise ValueError(f"precision must be one of {', '.join(_PRECISION)}, got {precision!r}")
        if step_graphs is not None and step_graphs not in (*BACKENDS, "auto"):
            raise ValueError(f"step_graphs must be one of {', '.join(BACKENDS)}, auto or None, got {step_graphs!r}")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available():
            cpu = True  # torchrun on CPUs: Accelerate only sets up gloo processes when told to use the CPU
        if not torch.distributed.is_initialized():
            # Each Trainer builds its Accelerator with its own settings (a sweep's trials may differ in precision);
            # Accelerate keeps them in a process-wide singleton that refuses a change, so start it afresh. Its own
            # test utilities do the same. Under torchrun the singleton holds the process group: keep it.
            from accelerate.state import AcceleratorState, GradientState

            AcceleratorState._reset_state(reset_partial_state=True)
            GradientState._reset_state()
        self.accelerator = Accelerator(  # non_blocking: batches from pinned memory go to the GPU without a wait
            gradient_accumulation_steps=accumulate_grad_batches, mixed_precision=_PRECISION[precision], cpu=cpu,
            dataloader_config=DataLoaderConfiguration(non_blocking=True),
            # autocast's cache of cast weights would be kept from one graph replay to the next: off with graphs
            kwargs_handlers=[AutocastKwargs(cache_enabled=False)] if step_graphs else None,
        )
        self.max_epochs, self.max_steps = max_epochs, max_steps
        self.limit_train_batches, self.limit_val_batches = limit_train_batches, limit_val_batches
        self.log_every_n_steps = max(1, log_every_n_steps)
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_val = gradient_clip_val
        self.callbacks = list(callbacks)
        self.logger = logger if logger is not None else NoOpLogger()
        self.default_root_dir = default_root_dir
        self.enable_progress_bar = enable_progress_bar and self.accelerator.is_main_process
        self.save_every_n_steps = save_every_n_steps
        self.step_graphs = step_graphs
        self.graphs: StepGraphs | None = None  # made by fit when step_graphs is set

        self.global_step = 0
        self.current_epoch = 0
        self.should_stop = False
        self.callback_metrics: dict[str, float] = {}
        self.estimated_stepping_batches: int | float = math.inf
        self.module: TrainerModule | None = None
        self.optimizer = None
        self.lr_scheduler = None
        self.scheduler_interval = "step"
        self._model = None  # the module in a _StepDispatch, as Accelerate wrapped it (DDP and the like)
        self._results = Results()
        self._current_hook: str | None = None
        self._progress = None
        self._bad_loss: torch.Tensor | None = None  # [first step with a non-finite loss, that loss], -1 while none
        self._train_sampler = None  # the user's batch sampler, told the epoch so a resumed run sees the same order
        self._resume: dict | None = None  # position and outputs of the epoch a checkpoint was taken in
        self.last_state_path: str | None = None  # the newest resumable checkpoint, and its step
        self.last_state_step: int | None = None
        self._stop_request: str | None = None  # why the run was asked to stop from outside (request_stop)
        self._fit_started = False

    def request_stop(self, reason: str = "SIGTERM") -> None:
        """Stop at the next optimizer step boundary: write a resumable checkpoint (when the run writes them at all,
        `save_every_n_steps`), then raise `Interrupted`. Before `fit` has begun, raise `Interrupted` at once; once it
        has ended, there is nothing left to stop. Meant for a signal handler."""
        if not self._fit_started:
            raise Interrupted(reason, self.global_step)
        self._stop_request = reason

    # --- hooks ------------------------------------------------------------------------------------------------
    def _call(self, hook: str, *args: Any) -> Any:
        """The one hook dispatcher: run the module's `hook`, then each callback's, skipping objects that do not
        define it, and return the module's result. A step method (`training_step`, ...) runs through the prepared
        wrapper, so that DDP and autocast see the forward. The hook under way picks `log()`'s defaults."""
        previous, self._current_hook = self._current_hook, hook
        try:
            if hook in _STEP_METHODS:
                return self._model(hook, *args)
            fn = getattr(self.module, hook, None)
            result = fn(*args) if callable(fn) else None
            for callback in self.callbacks:
                fn = getattr(callback, hook, None)
                if callable(fn):
                    fn(self, self.module, *args)
            return result
        finally:
            self._current_hook = previous

    def log(self, name: str, value: Any, prog_bar: bool = False, on_step: bool | None = None,
            on_epoch: bool | None = None, batch_size: int | None = None) -> None:
        """What `TrainerModule.log` calls: record a value with Lightning's defaults for the hook under way."""
        self._results.log(self._current_hook, name, value, prog_bar, on_step, on_epoch, batch_size)

    def _keeps_outputs(self, hook: str) -> bool:
        """Whether the module overrides `hook` (an `*_epoch_end`): only then are the epoch's step outputs kept."""
        return getattr(type(self.module), hook, None) is not getattr(TrainerModule, hook)

    @property
    def is_main_process(self) -> bool:
        return self.accelerator.is_main_process

    # --- set-up -----------------------------------------------------------------------------------------------
    def _attach(self, module: TrainerModule) -> None:
        if self.module is module:
            return
        module.trainer = self
        self.module = module
        self._model = self.accelerator.prepare_model(_StepDispatch(module))

    def _configure_optimizers(self, steps_per_epoch: int) -> None:
        total = steps_per_epoch * self.max_epochs
        self.estimated_stepping_batches = min(total, self.max_steps) if self.max_steps > 0 else total
        config = self.module.configure_optimizers()
        optimizer, scheduler, interval = config, None, "step"
        if isinstance(config, dict):
            optimizer = config["optimizer"]
            scheduler = config.get("lr_scheduler")
            if isinstance(scheduler, dict):
                interval = scheduler.get("interval", "epoch")
                scheduler = scheduler["scheduler"]
        # The scheduler is stepped here, once per optimizer step; Accelerate's wrapper would step it once per process.
        self.optimizer = self.accelerator.prepare_optimizer(optimizer)
        self.lr_scheduler, self.scheduler_interval = scheduler, interval

    # --- writing metrics ------------------------------------------------------------------------------------
    def _write(self, metrics: dict[str, float]) -> None:
        if not metrics:
            return
        self.callback_metrics.update(metrics)
        for name, value in metrics.items():  # `valid/loss` means `valid/loss_epoch` when both were logged
            if name.endswith("_epoch"):
                self.callback_metrics[name[: -len("_epoch")]] = value
        self.logger.log_metrics({**metrics, "epoch": self.current_epoch}, step=self.global_step)

    def _write_epoch(self) -> dict[str, float]:
        metrics = self._results.pop_epoch(lambda t: self.accelerator.reduce(t.to(self.accelerator.device), "sum"))
        self._write(metrics)
        return metrics

    def _update_progress(self) -> None:
        """The bar shows the training step values that asked for it (`prog_bar`), short-named (`loss=0.52`), so the
        line fits a terminal; how a validation went is a line of its own (callbacks.ValidationLine)."""
        if self._progress is not None:
            shown = {k.split("/")[-1].removesuffix("_step"): f"{v:.3g}" for k, v in self.callback_metrics.items()
                     if k in self._results.prog_bar and k.startswith("train/") and k.endswith("_step")}
            self._progress.set_postfix(shown, refresh=False)

    # --- the loop ---------------------------------------------------------------------------------------------
    def fit(self, module: TrainerModule, train_dataloader: DataLoader, val_dataloader: DataLoader | None = None,
            ckpt_path: str | None = None):
        """Train; with `ckpt_path` (a folder `save_state` wrote), continue exactly where that checkpoint was taken."""
        self._attach(module)
        self._train_sampler = train_dataloader.batch_sampler
        train_loader = self.accelerator.prepare_data_loader(_limit(train_dataloader, self.limit_train_batches))
        val_loader = self._prepare_eval(val_dataloader)
        self._configure_optimizers(math.ceil(len(train_loader) / self.accumulate_grad_batches))
        if ckpt_path is not None:
            load_resumable(self, ckpt_path)
        backend = resolve(self.step_graphs, self)
        if backend and self.graphs is None:  # after the state is loaded: graphs hold its tensors
            self.graphs = StepGraphs(self, backend)
        self._fit_started = True
        try:
            self._call("on_fit_start")
            self._call("on_train_start")
            for epoch in range(self.current_epoch, self.max_epochs):
                self.current_epoch = epoch
                self._train_epoch(train_loader)
                if val_loader is not None:
                    self._eval_epoch(val_loader, "validation")
                if self.should_stop or self._reached_max_steps():
                    break
            self._call("on_train_end")
            self._call("on_fit_end")
        except BaseException as exc:
            self._call("on_exception", exc)
            raise
        finally:
            self._progress_close()
        return self.callback_metrics

    def _reached_max_steps(self) -> bool:
        return 0 < self.max_steps <= self.global_step

    def _train_epoch(self, loader) -> None:
        from tqdm.auto import tqdm

        self._model.train()
        for sampler in (loader, self._train_sampler):  # the epoch fixes the order: set it, do not count on it
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(self.current_epoch)
        resume, self._resume = self._resume, None
        skip, outputs = (resume["batches_done"], resume["outputs"]) if resume else (0, [])
        if not resume:
            self._call("on_train_epoch_start")
        if self.graphs is not None:
            self.graphs.new_epoch()
        if self.enable_progress_bar:
            self._progress = tqdm(total=len(loader), initial=skip, desc=f"Epoch {self.current_epoch}",
                                  dynamic_ncols=True)
        batches = self.accelerator.skip_first_batches(loader, skip) if skip else loader
        if resume:
            batches = restore_rng_after_first_batch(batches, resume["rng"])
        done, keep = skip, self._keeps_outputs("training_epoch_end")
        for batch_idx, batch in enumerate(batches, start=skip):
            done, step_before = batch_idx + 1, self.global_step
            self._results.batch = batch
            self._call("on_train_batch_start", batch, batch_idx)
            out = self.graphs.run(batch, batch_idx) if self.graphs is not None else None
            if out is not None:  # the whole step replayed: its results are in tensors the next replay rewrites
                loss = out["loss"] if isinstance(out, dict) else out
                self._after_step()
            else:
                with self.accelerator.accumulate(self._model):
                    out = self._call("training_step", batch, batch_idx)
                    loss = out["loss"] if isinstance(out, dict) else out
                    self._watch_loss(loss)
                    self.accelerator.backward(loss)
                    if self.accelerator.sync_gradients:
                        self._optimizer_step()
            if keep:
                outputs.append({k: v.detach().clone() for k, v in out.items()} if isinstance(out, dict) else
                               {"loss": loss.detach().clone()})
            self._call("on_train_batch_end", out, batch, batch_idx)
            if done % self.log_every_n_steps == 0:
                self._advance_progress(done)
            stepped = self.global_step != step_before
            if self.save_every_n_steps and stepped and (self.global_step % self.save_every_n_steps == 0
                                                        or self._stop_request):
                self.save_state(os.path.join(self.default_root_dir, "checkpoints", "last"), batch_idx + 1, outputs)
            if self._stop_request and stepped:
                raise Interrupted(self._stop_request, self.global_step)
            if self.should_stop or self._reached_max_steps():
                break
        self._results.batch = None
        self._advance_progress(done)
        self._progress_close()
        self._check_loss()
        self._call("training_epoch_end", outputs)
        self._call("on_train_epoch_end")
        if self.lr_scheduler is not None and self.scheduler_interval == "epoch":
            self.lr_scheduler.step()
        self._write_epoch()

    def _advance_progress(self, batches_done: int) -> None:
        """The bar moves every `log_every_n_steps` batches, like the rows it shows, not every batch."""
        if self._progress is not None:
            self._progress.update(batches_done - self._progress.n)

    def _progress_close(self) -> None:
        if self._progress is not None:
            self._progress.close()
            self._progress = None

    def _watch_loss(self, loss: torch.Tensor, step: torch.Tensor | None = None) -> None:
        """Remember, on the device, the first step whose loss was not finite; `_check_loss` reads it back only when
        a row is written, so the hot path has no host sync. `step`: the step number as a device tensor (a step
        graph's); by default a fill of the next step's number."""
        bad = ~torch.isfinite(loss.detach().float())
        if step is None:
            step = torch.full((), float(self.global_step + 1), device=loss.device)  # a fill, not a host copy
        if self._bad_loss is None:
            self._bad_loss = torch.full((2,), -1.0, device=loss.device)
        first = self._bad_loss[0] < 0  # updated in place: a step graph holds this tensor
        self._bad_loss.copy_(torch.where(first & bad, torch.stack([step, loss.detach().float()]), self._bad_loss))

    def _check_loss(self) -> None:
        """Raise NonFiniteLossError if any process saw a non-finite loss (one host read; every process decides
        alike, so none is left waiting in a collective)."""
        if self._bad_loss is None:
            return
        seen = self.accelerator.gather(self._bad_loss.reshape(1, 2)).reshape(-1, 2).tolist()
        bad = [(step, value) for step, value in seen if step >= 0]
        if bad:
            step, value = min(bad)
            raise NonFiniteLossError(int(step), value)

    def _clip_gradients(self) -> None:
        if self.gradient_clip_val:
            self.accelerator.clip_grad_norm_(self._model.parameters(), self.gradient_clip_val)

    def _optimizer_step(self) -> None:
        self._clip_gradients()
        self._call("on_before_optimizer_step", self.optimizer)
        self.optimizer.step()
        self._after_step()

    def _after_step(self) -> None:
        """What follows an optimizer step, eager or replayed: the scheduler, the count, a row every few steps."""
        if self.lr_scheduler is not None and self.scheduler_interval == "step":
            self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if self.global_step % self.log_every_n_steps == 0:
            self._check_loss()
            self._write(self._results.pop_step())
            self._update_progress()
        else:
            self._results.step.clear()

    def _prepare_eval(self, dataloader: DataLoader | None):
        if dataloader is None:
            return None
        return self.accelerator.prepare_data_loader(_limit(dataloader, self.limit_val_batches))

    @torch.no_grad()
    def _eval_epoch(self, loader, stage: str) -> dict[str, float]:
        """One pass over `loader`; `stage` is "validation" or "test"."""
        short = "validation" if stage == "validation" else "test"
        was_training = self._model.training
        self._model.eval()
        self._call(f"on_{short}_start")
        self._call(f"on_{short}_epoch_start")
        outputs, keep = [], self._keeps_outputs(f"{short}_epoch_end")
        for batch_idx, batch in enumerate(loader):
            self._results.batch = batch
            self._call(f"on_{short}_batch_start", batch, batch_idx)
            out = self._call(f"{short}_step", batch, batch_idx)
            if out is not None and keep:
                outputs.append(out)
            self._call(f"on_{short}_batch_end", out, batch, batch_idx)
            if (batch_idx + 1) % self.log_every_n_steps == 0:
                self._write(self._results.pop_step())
            else:
                self._results.step.clear()
        self._results.batch = None
        self._call(f"{short}_epoch_end", outputs)
        self._call(f"on_{short}_epoch_end")
        metrics = self._write_epoch()
        self._call(f"on_{short}_end")
        self._model.train(was_training)
        return metrics

    def validate(self, module: TrainerModule, dataloader: DataLoader) -> dict[str, float]:
        return self._evaluate(module, dataloader, "validation")

    def test(self, module: TrainerModule, dataloader: DataLoader) -> dict[str, float]:
        return self._evaluate(module, dataloader, "test")

    def _evaluate(self, module: TrainerModule, dataloader: DataLoader, stage: str) -> dict[str, float]:
        self._attach(module)
        return self._eval_epoch(self._prepare_eval(dataloader), stage)

    # --- checkpoints ----------------------------------------------------------------------------------------
    def _unwrapped(self) -> TrainerModule:
        return self.accelerator.unwrap_model(self._model).module

    def save_checkpoint(self, path: str) -> None:
        """Write the module with its `save_pretrained` on the main process, replacing `path` atomically: the new
        folder is written beside it and renamed in, so a crash mid-write leaves the previous one intact. Never after
        a non-finite loss."""
        self._check_loss()
        self.accelerator.wait_for_everyone()
        if self.is_main_process:
            replace_dir(self._unwrapped().save_pretrained, path)
        self.accelerator.wait_for_everyone()

    def save_state(self, path: str, batches_done: int, outputs: list) -> None:
        """A resumable checkpoint taken after an optimizer step: weights, optimizer, scheduler, position in the
        epoch, RNG states, `self.log` sums, callback and logger state (`trainer/checkpoint.py`). Never after a
        non-finite loss: the previous checkpoint stays the last good one."""
        save_resumable(self, path, batches_done, outputs)

    def on_main(self, fn: Callable[[], Any]) -> Any:
        """`fn()` on the main process only, its result on every process (sent over the process group): for files
        that only the main process may see, such as a run folder on the main node's own disk. A CheckpointError it
        raises is raised on every process alike, so none is left waiting in a collective."""
        from accelerate.utils import broadcast_object_list

        shared: list = [None, None]
        if self.is_main_process:
            try:
                shared[0] = fn()
            except CheckpointError as exc:
                shared[1] = str(exc)
        if self.accelerator.num_processes > 1:
            broadcast_object_list(shared)
        if shared[1] is not None:
            raise CheckpointError(shared[1])
        return shared[0]
