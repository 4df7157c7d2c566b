"""The fine-tuning recipe behind scripts/train.py (and each sweep trial): its flags, and `fit`, which reads and checks
the data, holds the run folder, loads the model, builds the trainer with its callbacks and loggers, trains, and
records how the run ended (trainer/run_folder.py).
"""
from __future__ import annotations

import json
import os
import shlex
import sys

from recipes import cli
from recipes.record import add_logger_args, build_run_logger, write_report
from tracking.files import first_line, is_disk_full

# The recipe of the CoLA sweep's best trial, rounded (issue #14; README "Quality"): 3 epochs of batch 32, a head that
# learns 57x faster than the encoder. Over 3 seeds it matches the 5-epoch batch-16 recipe it replaced in half the time.
DEFAULTS = dict(model="minilm", max_epochs=3, batch_size=32, lr=3e-5, head_lr=1.7e-3, warmup_ratio=0.15,
                weight_decay=0.09, dropout=0.0)
# Flags that say how to watch or where to log, not what is trained: a resumed run may change them.
MAY_CHANGE_ON_RESUME = frozenset({
    "resume", "run_name", "output_dir", "config", "max_epochs", "max_steps", "log_every_n_steps",
    "save_every_n_steps", "no_progress_bar", "num_workers", "compile", "logger", "log_model", "max_examples",
    "wandb_project", "wandb_entity", "wandb_mode", "wandb_tags", "confusion_matrix", "mlflow_experiment",
    "logger_timeout", "run_group",
})
# What a run records in hparams.yaml besides its flags (sweep.py adds "sweep"); --config skips them.
HPARAM_EXTRAS = ("optimizer", "lr_schedule", "git_commit", "data", "official_metrics", "num_processes",
                 "global_batch_size", "versions", "sweep")


def build_parser(prog: str = "train.py") -> cli.Parser:
    from data.flags import add_data_args

    p = cli.Parser(prog=prog, description="Fine-tune a transformer on CoLA (default), a GLUE task or your own data "
                   "with a hand-written Accelerate loop; metrics, confusion matrices and misclassified sentences go to "
                   "the chosen loggers.")
    p.add_argument("--model", default=DEFAULTS["model"],
                   help="'minilm' (all-MiniLM-L6-v2 shipped with the install, works offline), a local Hugging Face "
                        "model folder, or a Hub id such as google/bert_uncased_L-2_H-128_A-2 (default: %(default)s)")
    p.add_argument("--config", default=None, metavar="HPARAMS_YAML",
                   help="re-run a saved run: flags from its hparams.yaml; flags given here take precedence")
    add_data_args(p)
    p.add_argument("--max-epochs", type=cli.positive_int, default=DEFAULTS["max_epochs"], help="(default: %(default)s)")
    p.add_argument("--max-steps", type=cli.positive_int, default=None,
                   help="stop after this many optimizer steps (default: no limit)")
    p.add_argument("--limit-train-batches", type=cli.positive_int, default=None,
                   help="use only the first N training batches of each epoch")
    p.add_argument("--limit-val-batches", type=cli.positive_int, default=None,
                   help="use only the first N validation batches")
    p.add_argument("--batch-size", type=cli.positive_int, default=DEFAULTS["batch_size"],
                   help="training batch size per process (default: %(default)s)")
    p.add_argument("--lr", type=cli.positive_float, default=DEFAULTS["lr"],
                   help="peak learning rate of the encoder (default: %(default)s)")
    p.add_argument("--head-lr", type=cli.positive_float, default=DEFAULTS["head_lr"],
                   help="peak learning rate of the pooler and classifier, which start untrained (default: %(default)s)")
    p.add_argument("--warmup-ratio", type=cli.fraction, default=DEFAULTS["warmup_ratio"],
                   help="fraction of steps with linear warm-up, then linear decay to 0 (default: %(default)s)")
    p.add_argument("--weight-decay", type=cli.non_negative_float, default=DEFAULTS["weight_decay"],
                   help="(default: %(default)s)")
    p.add_argument("--dropout", type=cli.probability_or_none, default=DEFAULTS["dropout"],
                   help="hidden and attention dropout of the encoder; 'none' keeps the checkpoint's (default: "
                        "%(default)s)")
    p.add_argument("--accumulate-grad-batches", type=cli.positive_int, default=1, help="(default: %(default)s)")
    p.add_argument("--precision", choices=["32", "bf16", "16"], default="32",
                   help="32, or mixed precision bf16/16 through Accelerate (default: %(default)s)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer (dynamic shapes); the first steps wait for compilation")
    p.add_argument("--cuda-graphs", choices=["auto", "on", "off"], default="auto",
                   help="'on': capture each training step whole (forward, backward, clipping, AdamW) as a CUDA graph "
                        "per padded length and replay it; auto: on with one GPU once a run has enough steps to pay "
                        "for the capture, a number not yet measured for whole-step graphs, so off for now (default: "
                        "%(default)s; BENCHMARKS.md)")
    p.add_argument("--deterministic", action="store_true",
                   help="deterministic algorithms on a GPU too (always on the CPU, where they cost nothing; on a GPU "
                        "they slow steps down: BENCHMARKS.md)")
    p.add_argument("--pad-to-multiple-of", type=cli.positive_int, default=None,
                   help="pad training batches to a multiple of N tokens (default: 16 with --cuda-graphs on, else to the "
                        "longest sentence)")
    p.add_argument("--num-workers", type=cli.non_negative_int, default=None,
                   help="DataLoader worker processes (default: 0; batches are pinned for a GPU)")
    p.add_argument("--seed", type=cli.seed, default=42, help="(default: %(default)s)")
    p.add_argument("--output-dir", default="runs", help="where run folders go (default: %(default)s)")
    p.add_argument("--run-name", default=None, help="run folder name (default: a timestamp)")
    p.add_argument("--log-every-n-steps", type=cli.positive_int, default=10, help="(default: %(default)s)")
    p.add_argument("--monitor", default=None,
                   help="metric that picks the best checkpoint and drives early stopping; the post used "
                        "valid/loss with --monitor-mode min (default: the task's official metric, valid/mcc for CoLA)")
    p.add_argument("--monitor-mode", choices=["min", "max"], default="max", help="(default: %(default)s)")
    p.add_argument("--patience", type=cli.positive_int, default=3,
                   help="early stopping: validations without improvement before stopping (default: %(default)s)")
    p.add_argument("--max-examples", type=cli.positive_int, default=None,
                   help="cap on rows of the misclassified-examples table (default: all)")
    p.add_argument("--save-every-n-steps", type=cli.positive_int, default=None,
                   help="write a resumable checkpoint to <run>/checkpoints/last every N optimizer steps")
    p.add_argument("--resume", default=None, metavar="auto|PATH",
                   help="continue an interrupted run: 'auto' (the run named by --run-name, else the newest "
                        "resumable run in --output-dir) or a run or checkpoint folder")
    p.add_argument("--log-model", action="store_true",
                   help="also log the best checkpoint as an artifact (W&B: type model, aliases best and latest)")
    p.add_argument("--no-progress-bar", action="store_true", help="hide the progress bar")
    add_logger_args(p)
    return p


def parse(argv: list[str] | None = None, parser: cli.Parser | None = None):
    """The flags of `argv` (or the command line), with `--config FILE` filling in what they do not give."""
    from data.flags import DATA_KEYS

    return cli.parse_args(parser or build_parser(), argv, extras=HPARAM_EXTRAS, replaced_together=DATA_KEYS)


def main(argv: list[str] | None = None, callbacks=()) -> int:
    """scripts/train.py: parse the flags of `argv` (or the command line) and train."""
    return fit(parse(argv), argv, callbacks=callbacks)


def load_source(args):
    """The data the flags name, read and checked (before any folder is made or weights are loaded), and the
    monitored metric settled: the task's official one unless --monitor names another the model logs."""
    from data.flags import source_from_args
    from models.tasks import check_monitor, official_metrics

    source = source_from_args(args)
    source.load()
    args.monitor = args.monitor or official_metrics(source)[0]
    check_monitor(args.monitor, source)
    return source


def fit(args, argv: list[str] | None = None, callbacks=()) -> int:
    """Train as the flags say; returns the exit code. `callbacks`: extra `trainer.Callback`s run after the built-in
    ones (a sweep's pruning; benchmarks/throughput.py times steps so). `argv`: the command line, for the resume
    hint."""
    from trainer import CheckpointError, Interrupted, NonFiniteLossError, Trainer
    from trainer.run_folder import check_run_name, describe_status, open_run

    if args.run_name is not None:
        check_run_name(args.run_name)
    refuse_unsupported_launch()
    source = load_source(args)
    graphs = step_graphs(args)
    trainer = Trainer(
        max_epochs=args.max_epochs, max_steps=args.max_steps or -1,
        limit_train_batches=args.limit_train_batches, limit_val_batches=args.limit_val_batches,
        log_every_n_steps=args.log_every_n_steps, accumulate_grad_batches=args.accumulate_grad_batches,
        gradient_clip_val=1.0, precision=args.precision,
        enable_progress_bar=not args.no_progress_bar, save_every_n_steps=args.save_every_n_steps,
        step_graphs=graphs,
    )
    code = 0
    # SIGTERM (and SIGHUP) stop the run at the next step boundary (before training starts: at once, nothing kept)
    with cli.on_sigterm(trainer.request_stop), \
            open_run(trainer.accelerator, args.output_dir, args.run_name, args.resume, flags(args, source),
                     MAY_CHANGE_ON_RESUME) as run:
        if run.checkpoint:  # on the main process: the run folder may be on its disk only (several machines)
            changed = trainer.on_main(lambda: changed_data(run.path, source))
            if changed:
                raise cli.UsageError(f"cannot resume {run.path}: {changed}")
        if trainer.is_main_process:
            print(f"run folder: {os.path.abspath(run.path)}", flush=True)
            if args.resume and run.checkpoint:
                print(f"resuming from {run.checkpoint} (step {run.resume_step}); the run was "
                      f"{describe_status(run.previous)}")
            elif args.resume:
                print(f"no run folder {run.path} yet: starting it")
        model, datamodule = _prepare(args, source, graphs, run.checkpoint, trainer)
        checkpoint = _callbacks(args, source, trainer, datamodule, run.path, callbacks)
        trainer.default_root_dir = run.path
        run.logger = trainer.logger = build_run_logger(args, run.path, trainer.is_main_process)
        run.logger.log_hyperparams(hyperparameters(args, source, trainer))
        run.report, run.step = write_report, lambda: trainer.global_step
        run.start()
        try:
            trainer.fit(model, datamodule.train_dataloader(num_processes=trainer.accelerator.num_processes),
                        datamodule.val_dataloader(), ckpt_path=run.checkpoint)
            # A callback that stopped the run for a reason of its own names it (a sweep's pruned trial: "pruned").
            run.outcome = next((s for cb in trainer.callbacks if (s := getattr(cb, "stop_status", None))), None)
        except NonFiniteLossError as exc:
            code = 1
            run.close(exc)
            print(f"error: {exc}; {last_good(trainer, checkpoint, args)}. Start a new run with a lower --lr.",
                  file=sys.stderr)
        except (KeyboardInterrupt, Interrupted) as exc:
            code = cli.EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else cli.exit_code(exc.signal_name)
            run.close(exc)
            how = "Ctrl-C" if isinstance(exc, KeyboardInterrupt) else exc.signal_name
            print(f"interrupted ({how}) at step {trainer.global_step}, epoch {trainer.current_epoch}; "
                  f"{resume_hint(trainer, run.path, argv)}", file=sys.stderr)
        except CheckpointError as exc:
            code = cli.EXIT_USAGE
            run.close(exc)
            print(f"error: cannot resume: {exc}", file=sys.stderr)
        except Exception as exc:
            if not is_disk_full(exc):  # a crash: the run is recorded as failed, and the traceback says where
                raise
            code = 1
            run.close(exc)
            print(f"error: the disk is full: {first_line(exc)}; {last_good(trainer, checkpoint, args)}. Free some "
                  "space, or pass an --output-dir on another disk", file=sys.stderr)
    if run.logger_hung:
        cli.exit_hard_after_output()
    if code == 0 and trainer.is_main_process:
        if trainer.graphs is not None:
            print(trainer.graphs.summary())
        if checkpoint.best_model_path:
            print(f"best checkpoint: {os.path.abspath(checkpoint.best_model_path)} "
                  f"({args.monitor}={checkpoint.best_score:.4f} at step {checkpoint.best_step})")
        best = {k: round(v, 4) for k, v in checkpoint.best_metrics.items() if k.startswith("valid/")}
        print(json.dumps({"best": best, "step": checkpoint.best_step}), flush=True)
    return code


def changed_data(run_dir: str, source) -> str | None:
    """What changed in the data since the run in `run_dir` began (its hparams.yaml records each split's content
    hash), in words; None when nothing did, or when the run predates the record."""
    from trainer.run_folder import HPARAMS_FILE, read_yaml

    saved = ((read_yaml(os.path.join(run_dir, HPARAMS_FILE)) or {}).get("data") or {}).get("fingerprint") or {}
    changed = [split for split, digest in saved.items() if source.fingerprints.get(split) != digest]
    if not changed:
        return None
    where = {"train": source.train_file, "validation": source.validation_file}
    named = ", ".join(f"{split}{f' ({where[split]})' if where.get(split) else ''}" for split in changed)
    return (f"the data it trained on has changed since ({named}: other rows, labels or texts); resume with the data "
            "the run began with, or start a new --run-name")


def _prepare(args, source, graphs, resume_from, trainer):
    """The tokenizer, the tokenized data and the model (any failure is a refusal: the run folder is abandoned)."""
    import torch

    from data import TextClassificationDataModule
    from models.loading import fresh_weights, load_classifier, load_tokenizer
    from models.tasks import model_options
    from trainer import CheckpointError, seed_everything
    from trainer.checkpoint import check_compatible

    tokenizer = load_tokenizer(args.model)
    datamodule = TextClassificationDataModule(tokenizer, source=source, batch_size=args.batch_size, seed=args.seed,
                                              num_workers=args.num_workers,
                                              pad_to_multiple_of=args.pad_to_multiple_of or graph_padding(graphs))
    datamodule.setup()
    # before the new head's weights are drawn:
    seed_everything(args.seed, deterministic=args.deterministic or not torch.cuda.is_available())
    model = load_classifier(args.model, lr=args.lr, head_lr=args.head_lr, weight_decay=args.weight_decay,
                            warmup_ratio=args.warmup_ratio, dropout=args.dropout, tokenizer=tokenizer,
                            wandb_charts=args.confusion_matrix, **model_options(source))
    note = fresh_weights(model, args.model)
    if note:
        print(note, file=sys.stderr)
    if resume_from:
        try:  # on the main process: the run folder may be on its disk only (several machines)
            trainer.on_main(lambda: check_compatible(resume_from, model))
        except CheckpointError as exc:
            raise cli.UsageError(f"cannot resume: {exc}") from None
    if args.compile:
        model.compile_model()
    return model, datamodule


def _callbacks(args, source, trainer, datamodule, run_dir, extra):
    """The run's callbacks (best checkpoint, early stopping, misclassified examples, best scores, then `extra`);
    returns the checkpoint callback."""
    from models import MisclassifiedExamples
    from models.tasks import best_score_modes
    from trainer import BestScores, EarlyStopping, ModelCheckpoint, ValidationLine

    checkpoint = ModelCheckpoint(monitor=args.monitor, mode=args.monitor_mode, log_model=args.log_model,
                                 artifact_name=f"model-{os.path.basename(run_dir)}")
    trainer.callbacks = [checkpoint, EarlyStopping(monitor=args.monitor, mode=args.monitor_mode, patience=args.patience),
                         MisclassifiedExamples(datamodule.sentences["validation"], max_rows=args.max_examples,
                                               pairs=datamodule.pairs["validation"]),
                         BestScores(best_score_modes(source, args.monitor, args.monitor_mode)),
                         ValidationLine(args.monitor, args.monitor_mode), *extra]
    return checkpoint


# What `accelerate launch` sets for a sharded setup (`accelerate config`), by the name users know it by.
SHARDING = {"ACCELERATE_USE_FSDP": "FSDP", "ACCELERATE_USE_DEEPSPEED": "DeepSpeed"}


def refuse_unsupported_launch() -> None:
    """Launches that would train wrongly, refused before anything is written. FSDP and DeepSpeed until tested: the
    trainer saves the full optimizer state and the unwrapped weights, which is wrong for a sharded model, so a
    checkpoint could not be resumed. And `accelerate launch --cpu --num_machines N` without MPI: Accelerate then starts
    each machine's process alone (MASTER_ADDR but no WORLD_SIZE), and every machine would train a run of its own."""
    if os.environ.get("ACCELERATE_USE_CPU") and os.environ.get("MASTER_ADDR") and "WORLD_SIZE" not in os.environ:
        raise cli.UsageError("accelerate launch started this process alone on CPUs (several machines need MPI there, "
                             "--mpirun_hostfile): each machine would train a run of its own; launch with torchrun "
                             "--nnodes N --rdzv-backend c10d (README: Several GPUs or machines)")
    for var, name in SHARDING.items():
        if os.environ.get(var, "").strip().lower() in ("1", "true", "yes"):
            raise cli.UsageError(f"{name} ({var}) is not supported yet: checkpoints and resume are verified with "
                                 f"DDP only, and a sharded model's would be wrong; answer 'no' to {name} in "
                                 "`accelerate config` (DDP), or unset the variable")


def graph_padding(graphs: str | None) -> int | None:
    """Training batches padded to multiples of 16 tokens where steps may be captured (a few shapes, each replayed
    often); else to the longest sentence."""
    from trainer import step_graph

    return 16 if graphs == "cuda" or graphs == "auto" and step_graph.BREAK_EVEN_STEPS is not None else None


def step_graphs(args) -> str | None:
    """What the Trainer's `step_graphs` gets from --cuda-graphs: "cuda" (on), "auto" (with a GPU: the trainer decides
    by the number of steps, `trainer.step_graph.BREAK_EVEN_STEPS`) or None (eager steps). `on` where graphs cannot
    work is refused before anything is written."""
    import torch

    from trainer import step_graph

    mode = args.cuda_graphs
    if mode == "off" or not torch.cuda.is_available() and mode == "auto":
        return None
    if mode == "auto":  # until the break-even is measured, the trainer is not even asked (eager, as before)
        return None if step_graph.BREAK_EVEN_STEPS is None or args.compile or args.accumulate_grad_batches > 1 or \
            args.precision == "16" or int(os.environ.get("WORLD_SIZE", "1")) > 1 else "auto"
    if not torch.cuda.is_available():
        raise cli.UsageError("--cuda-graphs on needs a CUDA GPU, and none is visible; leave the flag out on a CPU")
    if args.compile:
        raise cli.UsageError("--cuda-graphs on captures the eager training step; leave out --compile")
    if args.accumulate_grad_batches > 1:  # a replay would overwrite gradients that are still being accumulated
        raise cli.UsageError("--cuda-graphs on needs --accumulate-grad-batches 1")
    if args.precision == "16":
        raise cli.UsageError("--cuda-graphs on does not run with --precision 16 (loss scaling skips steps on the "
                             "host); use --precision bf16 or 32")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise cli.UsageError("--cuda-graphs on runs in one process only (not verified with several GPUs); launch one "
                             "process or leave the flag out")
    return "cuda"


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


def hyperparameters(args, source, trainer) -> dict:
    import accelerate
    import torch
    import transformers

    from models.tasks import official_metrics

    return {**vars(args), "optimizer": "AdamW", "lr_schedule": "linear warm-up, linear decay to 0",
            "git_commit": cli.git_commit(), "data_dir": source.data_dir, "data": source.describe(),
            "official_metrics": list(official_metrics(source)), "num_processes": trainer.accelerator.num_processes,
            "global_batch_size": args.batch_size * args.accumulate_grad_batches * trainer.accelerator.num_processes,
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "accelerate": accelerate.__version__}}
