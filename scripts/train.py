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

from scripts import _cli  # noqa: E402

DEFAULTS = dict(model="minilm", max_epochs=5, batch_size=16, lr=5e-5, head_lr=None, warmup_ratio=0.1,
                weight_decay=0.01, dropout=0.0)


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
                   help="peak learning rate of the pooler and classifier, which start untrained (default: --lr)")
    p.add_argument("--warmup-ratio", type=float, default=DEFAULTS["warmup_ratio"],
                   help="fraction of steps with linear warm-up, then linear decay to 0 (default: %(default)s)")
    p.add_argument("--weight-decay", type=float, default=DEFAULTS["weight_decay"], help="(default: %(default)s)")
    p.add_argument("--dropout", type=_cli.probability_or_none, default=DEFAULTS["dropout"],
                   help="hidden and attention dropout of the encoder; 'none' keeps the checkpoint's (default: "
                        "%(default)s)")
    p.add_argument("--accumulate-grad-batches", type=_cli.positive_int, default=1, help="(default: %(default)s)")
    p.add_argument("--precision", choices=["32", "bf16", "16"], default="32",
                   help="32, or mixed precision bf16/16 through Accelerate (default: %(default)s)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the transformer (dynamic shapes); the first steps wait for compilation")
    p.add_argument("--num-workers", type=_cli.non_negative_int, default=None,
                   help="DataLoader worker processes (default: 0 without a GPU, 2 with one)")
    p.add_argument("--seed", type=int, default=42, help="(default: %(default)s)")
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


def main(argv: list[str] | None = None, callbacks=()) -> int:
    """`callbacks`: extra `trainer.Callback`s run after the built-in ones (benchmarks/throughput.py times steps so)."""
    args = _cli.parse_args(build_parser(), argv, extras=HPARAM_EXTRAS)
    run_dir, resume_from = _cli.resume_target(args.output_dir, args.run_name, args.resume) if args.resume else (None, None)
    source = _cli.load_data_source(args)
    official = _cli.official_metrics(source)
    args.monitor = args.monitor or official[0]

    from models import SamplesVisualisationLogger
    from tracking import build_logger
    from trainer import BestScores, EarlyStopping, ModelCheckpoint, NonFiniteLossError, Trainer, seed_everything

    seed_everything(args.seed, deterministic=True)
    model = _cli.load_model(args.model, lr=args.lr, head_lr=args.head_lr, weight_decay=args.weight_decay,
                            warmup_ratio=args.warmup_ratio, dropout=args.dropout, **_cli.model_options(source))
    if args.compile:
        model.model.compile(dynamic=True)  # in place: parameter names, checkpoints and hooks stay as they are
    datamodule = _cli.build_datamodule(source, model.tokenizer, batch_size=args.batch_size, seed=args.seed,
                                       num_workers=args.num_workers)

    checkpoint = ModelCheckpoint(monitor=args.monitor, mode=args.monitor_mode, log_model=args.log_model)
    trainer = Trainer(
        max_epochs=args.max_epochs, max_steps=args.max_steps or -1,
        limit_train_batches=args.limit_train_batches, limit_val_batches=args.limit_val_batches,
        log_every_n_steps=args.log_every_n_steps, accumulate_grad_batches=args.accumulate_grad_batches,
        gradient_clip_val=1.0, precision=args.precision,
        callbacks=[checkpoint, EarlyStopping(monitor=args.monitor, mode=args.monitor_mode, patience=args.patience),
                   SamplesVisualisationLogger(datamodule.sentences["validation"], max_rows=args.max_examples,
                                              pairs=datamodule.pairs["validation"]),
                   BestScores(_cli.best_score_modes(official, args.monitor, args.monitor_mode)),
                   *callbacks],
        enable_progress_bar=not args.no_progress_bar, save_every_n_steps=args.save_every_n_steps,
    )
    if args.resume:
        if resume_from is None and trainer.is_main_process and os.path.exists(os.path.join(run_dir, "metrics.csv")):
            os.remove(os.path.join(run_dir, "metrics.csv"))  # killed before its first checkpoint: start over
        print(f"resuming from {resume_from}" if resume_from else f"no checkpoint in {run_dir} yet: starting over")
    else:
        run_dir = _cli.shared_run_dir(trainer.accelerator, args.output_dir, args.run_name)
    trainer.default_root_dir = run_dir
    run_name = os.path.basename(run_dir)
    checkpoint.artifact_name = f"model-{run_name}"
    trainer.logger = build_logger(args.logger, run_dir, trainer.is_main_process, **_cli.logger_options(args, run_name))
    trainer.logger.log_hyperparams(hyperparameters(args, source, trainer))

    try:
        trainer.fit(model, datamodule.train_dataloader(num_processes=trainer.accelerator.num_processes),
                    datamodule.val_dataloader(), ckpt_path=resume_from)
    except NonFiniteLossError as exc:
        kept = f"the last good checkpoint is {os.path.abspath(checkpoint.best_model_path)}" \
            if checkpoint.best_model_path else "no checkpoint was written before it"
        print(f"error: {exc}; {kept}. Try a lower --lr.", file=sys.stderr)
        return 1

    if trainer.is_main_process:
        print(f"run folder: {os.path.abspath(run_dir)}")
        if "csv" in args.logger.split(","):
            write_report(run_dir)
        if checkpoint.best_model_path:
            print(f"best checkpoint: {os.path.abspath(checkpoint.best_model_path)} "
                  f"({args.monitor}={checkpoint.best_score:.4f} at step {checkpoint.best_step})")
        best = {k: round(v, 4) for k, v in checkpoint.best_metrics.items() if k.startswith("valid/")}
        print(json.dumps({"best": best, "step": checkpoint.best_step}))
    return 0


def write_report(run_dir: str) -> None:
    """report.html in the run folder; a failure here costs the report, never the finished run."""
    from tracking.report import build_report

    try:
        print(f"report: {os.path.abspath(build_report([run_dir], os.path.join(run_dir, 'report.html')))}")
    except Exception as exc:
        print(f"warning: could not write report.html ({type(exc).__name__}: {exc}); "
              f"try: python scripts/report.py {run_dir}", file=sys.stderr)


HPARAM_EXTRAS = ("optimizer", "lr_schedule", "git_commit", "data", "official_metrics", "num_processes",
                 "global_batch_size", "versions")  # what hyperparameters() records besides the flags


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
    sys.exit(_cli.run_main(main))
