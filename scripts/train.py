"""Fine-tune a sequence classifier on CoLA (or any GLUE task, CSV/JSON-lines files, a Hugging Face dataset) and
monitor the run.

    python scripts/train.py                                   # all-MiniLM-L6-v2, CoLA from the Hub or $COLA_DIR
    python scripts/train.py --data-dir ../shared/data/cola    # CoLA from local GLUE TSV files
    python scripts/train.py --train-file t.csv --validation-file v.csv   # your own classes
    accelerate launch scripts/train.py ...                    # several processes / GPUs
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts import _cli, _rundir  # noqa: E402

# The recipe of the CoLA sweep's best trial, rounded (issue #14; README "Quality"): 3 epochs of batch 32, a head that
# learns 57x faster than the encoder. Over 3 seeds it matches the 5-epoch batch-16 recipe it replaced in half the time.
DEFAULTS = dict(model="minilm", max_epochs=3, batch_size=32, lr=3e-5, head_lr=1.7e-3, warmup_ratio=0.15,
                weight_decay=0.09, dropout=0.0)


def build_parser() -> _cli.Parser:
    p = _cli.Parser(prog="train.py", description="Fine-tune a transformer on CoLA (default), a GLUE task or your own "
                    "data with a hand-written Accelerate loop; metrics, confusion matrices and misclassified "
                    "sentences go to the chosen loggers.")
    p.add_argument("--model", default=DEFAULTS["model"],
                   help="'minilm' (all-MiniLM-L6-v2 shipped with the install, works offline), a local Hugging Face "
                        "model folder, or a Hub id such as google/bert_uncased_L-2_H-128_A-2 (default: %(default)s)")
    p.add_argument("--config", default=None, metavar="HPARAMS_YAML",
                   help="re-run a saved run: flags from its hparams.yaml; flags given here take precedence")
    _cli.add_data_args(p)
    p.add_argument("--max-epochs", type=_cli.positive_int, default=DEFAULTS["max_epochs"], help="(default: %(default)s)")
    p.add_argument("--max-steps", type=_cli.positive_int, default=None,
                   help="stop after this many optimizer steps (default: no limit)")
    p.add_argument("--limit-train-batches", type=_cli.positive_int, default=None,
                   help="use only the first N training batches of each epoch")
    p.add_argument("--limit-val-batches", type=_cli.positive_int, default=None,
                   help="use only the first N validation batches")
    p.add_argument("--batch-size", type=_cli.positive_int, default=DEFAULTS["batch_size"],
                   help="training batch size per process (default: %(default)s)")
    p.add_argument("--lr", type=_cli.positive_float, default=DEFAULTS["lr"],
                   help="peak learning rate of the encoder (default: %(default)s)")
    p.add_argument("--head-lr", type=_cli.positive_float, default=DEFAULTS["head_lr"],
                   help="peak learning rate of the pooler and classifier, which start untrained (default: %(default)s)")
    p.add_argument("--warmup-ratio", type=_cli.fraction, default=DEFAULTS["warmup_ratio"],
                   help="fraction of steps with linear warm-up, then linear decay to 0 (default: %(default)s)")
    p.add_argument("--weight-decay", type=_cli.non_negative_float, default=DEFAULTS["weight_decay"], help="(default: %(default)s)")
    p.add_argument("--dropout", type=_cli.probability_or_none, default=DEFAULTS["dropout"],
                   help="hidden and attention dropout of the encoder; 'none' keeps the checkpoint's (default: "
                        "%(default)s)")
    p.add_argument("--accumulate-grad-batches", type=_cli.positive_int, default=1, help="(default: %(default)s)")
    p.add_argument("--precision", choices=["32", "bf16", "16"], default="32",
                   help="32, or mixed precision bf16/16 through Accelerate (default: %(default)s)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer (dynamic shapes); the first steps wait for compilation")
    p.add_argument("--cuda-graphs", choices=["auto", "on", "off", "inductor"], default="auto",
                   help="replay each training step's forward and backward as CUDA graphs, one per padded length: 'on' "
                        "captures torch's kernels (seconds to compile each length), 'inductor' compiles fused kernels "
                        "first (torch.compile mode reduce-overhead; minutes); auto: on with one CUDA GPU, off on a CPU "
                        "or under accelerate launch (default: %(default)s)")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms on a GPU too (always on the CPU, where they cost nothing; on an "
                        "H200 they made a step up to 1.8x slower, and attention's backward has no deterministic "
                        "kernel there anyway)")
    p.add_argument("--pad-to-multiple-of", type=_cli.positive_int, default=None,
                   help="pad training batches to a multiple of N tokens (default: 16 with --cuda-graphs, else to the "
                        "longest sentence)")
    p.add_argument("--num-workers", type=_cli.non_negative_int, default=None,
                   help="DataLoader worker processes (default: 0; batches are pinned for a GPU)")
    p.add_argument("--seed", type=_cli.seed, default=42, help="(default: %(default)s)")
    p.add_argument("--output-dir", default="runs", help="where run folders go (default: %(default)s)")
    p.add_argument("--run-name", default=None, help="run folder name (default: a timestamp)")
    p.add_argument("--log-every-n-steps", type=_cli.positive_int, default=10, help="(default: %(default)s)")
    p.add_argument("--monitor", default=None,
                   help="metric that picks the best checkpoint and drives early stopping; the post used "
                        "valid/loss with --monitor-mode min (default: the task's official metric, valid/mcc for CoLA)")
    p.add_argument("--monitor-mode", choices=["min", "max"], default="max", help="(default: %(default)s)")
    p.add_argument("--patience", type=_cli.positive_int, default=3,
                   help="early stopping: validations without improvement before stopping (default: %(default)s)")
    p.add_argument("--max-examples", type=_cli.positive_int, default=None,
                   help="cap on rows of the misclassified-examples table (default: all)")
    p.add_argument("--save-every-n-steps", type=_cli.positive_int, default=None,
                   help="write a resumable checkpoint to <run>/checkpoints/last every N optimizer steps")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="continue an interrupted run: 'auto' (the run named by --run-name, else the newest "
                        "resumable run in --output-dir) or a run or checkpoint folder")
    p.add_argument("--log-model", action="store_true",
                   help="also log the best checkpoint as an artifact (W&B: type model, aliases best and latest)")
    p.add_argument("--no-progress-bar", action="store_true", help="hide the progress bar")
    _cli.add_logger_args(p)
    return p


def check_monitor(args, official) -> None:
    """--monitor names a metric the model logs by the time a validation ends; checked before anything is loaded."""
    from models.cola import METRICS

    allowed = list(dict.fromkeys([*METRICS, *official]))
    if args.monitor.removesuffix("_epoch") not in allowed:
        raise _cli.UsageError(f"--monitor {args.monitor!r} is not a metric this model logs; choose from "
                              f"{', '.join(allowed)}")


def main(argv: list[str] | None = None, callbacks=()) -> int:
    """`callbacks`: extra `trainer.Callback`s run after the built-in ones (benchmarks/throughput.py times steps so)."""
    args = _cli.parse_args(build_parser(), argv, extras=HPARAM_EXTRAS)
    if args.run_name is not None:
        _rundir.check_run_name(args.run_name)
    source = _cli.load_data_source(args)  # read and checked before any folder is made or weights are loaded
    official = _cli.official_metrics(source)
    args.monitor = args.monitor or official[0]
    check_monitor(args, official)

    from trainer import Trainer

    trainer = Trainer(
        max_epochs=args.max_epochs, max_steps=args.max_steps or -1,
        limit_train_batches=args.limit_train_batches, limit_val_batches=args.limit_val_batches,
        log_every_n_steps=args.log_every_n_steps, accumulate_grad_batches=args.accumulate_grad_batches,
        gradient_clip_val=1.0, precision=args.precision,
        enable_progress_bar=not args.no_progress_bar, save_every_n_steps=args.save_every_n_steps,
    )
    run, run_dir, resume_from = _rundir.open_run(trainer.accelerator, args.output_dir, args.run_name, args.resume,
                                                 flags(args, source))
    if trainer.is_main_process:
        print(f"run folder: {os.path.abspath(run_dir)}", flush=True)
        if args.resume:
            print(f"resuming from {resume_from} (step {run.resume_step})" if resume_from
                  else f"no run folder {run_dir} yet: starting it")
    try:
        return train(args, trainer, run, run_dir, resume_from, source, official, argv, callbacks)
    finally:
        if run is not None:
            run.release()


def train(args, trainer, run, run_dir, resume_from, source, official, argv, callbacks) -> int:
    """Everything after the run folder is held: tokenizer, tokenized data and model (the folder is abandoned if
    any fails), then the loggers, the loop, and the run's end however it comes."""
    from data import DataError
    from models import SamplesVisualisationLogger
    from tracking import build_logger
    from trainer import BestScores, CheckpointError, EarlyStopping, ModelCheckpoint, NonFiniteLossError, seed_everything
    from trainer.checkpoint import check_compatible

    try:
        tokenizer = _cli.load_tokenizer(args.model)
        graphs = step_graphs(args)
        datamodule = _cli.build_datamodule(source, tokenizer, batch_size=args.batch_size, seed=args.seed,
                                           num_workers=args.num_workers,
                                           pad_to_multiple_of=args.pad_to_multiple_of or (16 if graphs else None))
        import torch  # before the new head's weights are drawn:

        seed_everything(args.seed, deterministic=args.deterministic or not torch.cuda.is_available())
        model = _cli.load_model(args.model, lr=args.lr, head_lr=args.head_lr, weight_decay=args.weight_decay,
                                warmup_ratio=args.warmup_ratio, dropout=args.dropout, tokenizer=tokenizer,
                                **_cli.model_options(source))
        if resume_from:
            check_compatible(resume_from, model)
    except CheckpointError as exc:
        if run is not None:
            run.abandon()
        raise _cli.UsageError(f"cannot resume: {exc}") from None
    except (_cli.UsageError, DataError, KeyboardInterrupt):
        if run is not None:
            run.abandon()
        raise
    if args.compile:
        model.compile_model()
    if graphs:
        model.use_step_graphs(args.batch_size, backend=graphs, lengths=datamodule.train_shapes())

    checkpoint = ModelCheckpoint(monitor=args.monitor, mode=args.monitor_mode, log_model=args.log_model,
                                 artifact_name=f"model-{os.path.basename(run_dir)}")
    trainer.callbacks = [checkpoint, EarlyStopping(monitor=args.monitor, mode=args.monitor_mode, patience=args.patience),
                         SamplesVisualisationLogger(datamodule.sentences["validation"], max_rows=args.max_examples,
                                                    pairs=datamodule.pairs["validation"]),
                         BestScores(_cli.best_score_modes(official, args.monitor, args.monitor_mode)), *callbacks]
    trainer.default_root_dir = run_dir
    # The local record (hparams.yaml, metrics.csv, tables, plots, summary, report) is always written; --logger adds
    # trackers on top of it.
    trainer.logger = build_logger(f"csv,{args.logger}", run_dir, trainer.is_main_process,
                                  **_cli.logger_options(args, os.path.basename(run_dir)))
    trainer.logger.log_hyperparams(hyperparameters(args, source, trainer))
    if run is not None:
        run.set_status("running")

    status, code = "failed", 1
    try:
        trainer.fit(model, datamodule.train_dataloader(num_processes=trainer.accelerator.num_processes),
                    datamodule.val_dataloader(), ckpt_path=resume_from)
        # A callback that stopped the run for a reason of its own names it (a sweep's pruned trial: "pruned").
        status = next((s for cb in trainer.callbacks if (s := getattr(cb, "stop_status", None))), "finished")
        code = 0
    except NonFiniteLossError as exc:
        print(f"error: {exc}; {last_good(trainer, checkpoint, args)}. Start a new run with a lower --lr.",
              file=sys.stderr)
    except KeyboardInterrupt:
        status, code = "interrupted", _cli.EXIT_INTERRUPTED
        print(f"interrupted (Ctrl-C) at step {trainer.global_step}, epoch {trainer.current_epoch}; "
              f"{resume_hint(trainer, run_dir, argv)}", file=sys.stderr)
    except CheckpointError as exc:
        status, code = "failed", _cli.EXIT_USAGE
        print(f"error: cannot resume: {exc}", file=sys.stderr)
    finally:
        _cli.finalize_logger(trainer.logger, "success" if code == 0 else status)
        if run is not None:
            run.set_status(status, trainer.global_step)
    if code == 0 and trainer.is_main_process:
        write_report(run_dir)
        if checkpoint.best_model_path:
            print(f"best checkpoint: {os.path.abspath(checkpoint.best_model_path)} "
                  f"({args.monitor}={checkpoint.best_score:.4f} at step {checkpoint.best_step})")
        best = {k: round(v, 4) for k, v in checkpoint.best_metrics.items() if k.startswith("valid/")}
        print(json.dumps({"best": best, "step": checkpoint.best_step}), flush=True)
    return code


# Whether --cuda-graphs auto turns graphs on with one GPU: on an H200, 3.3x faster steps than eager and the same
# valid/mcc per epoch to four decimals (BENCHMARKS.md, benchmarks/gpu_check.sh). Not yet measured with several GPUs.
GRAPHS_BY_DEFAULT_ON_CUDA = True


def step_graphs(args) -> str | None:
    """The `use_step_graphs` backend --cuda-graphs asks for, or None for eager steps."""
    import torch

    mode = args.cuda_graphs
    if mode == "auto":
        mode = "on" if GRAPHS_BY_DEFAULT_ON_CUDA and torch.cuda.is_available() and not args.compile \
            and args.accumulate_grad_batches == 1 and int(os.environ.get("WORLD_SIZE", "1")) == 1 else "off"
    if mode == "off":
        return None
    if args.compile:
        raise _cli.UsageError(f"--cuda-graphs {mode} compiles the training step itself; leave out --compile")
    if args.accumulate_grad_batches > 1:  # a replay would overwrite gradients that are still being accumulated
        raise _cli.UsageError(f"--cuda-graphs {mode} needs --accumulate-grad-batches 1")
    return "inductor" if mode == "inductor" else "cudagraphs"


def last_good(trainer, checkpoint, args) -> str:
    """The checkpoints written before the first non-finite loss, named truthfully."""
    kept = []
    if trainer.last_state_path:
        kept.append(f"{os.path.abspath(trainer.last_state_path)} (resumable, step {trainer.last_state_step})")
    if checkpoint.best_model_path:
        kept.append(f"{os.path.abspath(checkpoint.best_model_path)} ({args.monitor}={checkpoint.best_score:.4f} at "
                    f"step {checkpoint.best_step})")
    return f"the last good checkpoint{'s are' if len(kept) > 1 else ' is'} {' and '.join(kept)}" if kept \
        else "no checkpoint was written before it"


def resume_hint(trainer, run_dir, argv) -> str:
    from trainer.checkpoint import find_resumable

    if not trainer.last_state_path or find_resumable(run_dir) is None:
        return "no resumable checkpoint was written (pass --save-every-n-steps N to make a run resumable)"
    import shlex

    given = list(sys.argv[1:] if argv is None else argv)
    kept, skip = [], False
    for arg in given:
        if skip:
            skip = False
        elif arg == "--resume":
            skip = True
        elif not arg.startswith("--resume="):
            kept.append(arg)
    command = shlex.join(["python", "scripts/train.py", *kept, "--resume", os.path.abspath(run_dir)])
    return f"resume from step {trainer.last_state_step} with: {command}"


def flags(args, source) -> dict:
    """The flags as hparams.yaml records them (see `hyperparameters`), to compare a resumed run's with the run's own."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in {**vars(args), "data_dir": source.data_dir}.items()}


def write_report(run_dir: str) -> None:
    """report.html in the run folder; a failure here costs the report, never the finished run."""
    from tracking.report import build_report

    try:
        print(f"report: {os.path.abspath(build_report([run_dir], os.path.join(run_dir, 'report.html')))}")
    except Exception as exc:
        print(f"warning: could not write report.html ({type(exc).__name__}: {exc}); "
              f"try: python scripts/report.py {run_dir}", file=sys.stderr)


HPARAM_EXTRAS = ("optimizer", "lr_schedule", "git_commit", "data", "official_metrics", "num_processes",
                 "global_batch_size", "versions", "sweep")  # what a run records besides its flags (sweep.py: "sweep")


def hyperparameters(args, source, trainer) -> dict:
    import accelerate
    import torch
    import transformers

    return {**vars(args), "optimizer": "AdamW", "lr_schedule": "linear warm-up, linear decay to 0",
            "git_commit": _cli.git_commit(), "data_dir": source.data_dir, "data": source.describe(),
            "official_metrics": list(_cli.official_metrics(source)), "num_processes": trainer.accelerator.num_processes,
            "global_batch_size": args.batch_size * args.accumulate_grad_batches * trainer.accelerator.num_processes,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "accelerate": accelerate.__version__}}


if __name__ == "__main__":
    _cli.exit(_cli.run_main(main))
