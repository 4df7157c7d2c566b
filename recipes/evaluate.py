"""The evaluation recipe behind scripts/evaluate.py: validate a saved model with the training run's metrics, charts
and loggers, in a run folder of its own (`evaluate-<timestamp>`) with its report."""
from __future__ import annotations

import json
import os

from recipes import cli
from recipes.record import add_logger_args, build_run_logger, write_report


def build_parser() -> cli.Parser:
    from data.flags import add_data_args

    p = cli.Parser(prog="evaluate.py", description="Validate a sequence-classification checkpoint (any folder that "
                   "AutoModelForSequenceClassification.from_pretrained loads) on a validation set (CoLA's dev set by "
                   "default).")
    p.add_argument("--checkpoint", required=True, type=cli.existing_dir,
                   help="model folder, e.g. runs/<run>/checkpoints/best")
    add_data_args(p)  # --validation-file alone is enough: the checkpoint knows its classes
    p.add_argument("--batch-size", type=cli.positive_int, default=64, help="(default: %(default)s)")
    p.add_argument("--limit-val-batches", type=cli.positive_int, default=None,
                   help="use only the first N validation batches")
    p.add_argument("--precision", choices=["32", "bf16", "16"], default="32", help="(default: %(default)s)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the model runs (default: auto, a CUDA GPU when there is one)")
    p.add_argument("--output-dir", default="runs", help="where run folders go (default: %(default)s)")
    p.add_argument("--run-name", default=None, help="run folder name (default: evaluate-<timestamp>)")
    add_logger_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """scripts/evaluate.py: parse the flags of `argv` (or the command line) and evaluate."""
    return evaluate(build_parser().parse_args(argv))


def evaluate(args) -> int:
    """Validate `args.checkpoint` on the data the flags name; prints the metrics as JSON last."""
    from data import TextClassificationDataModule
    from data.flags import source_from_args
    from models import MisclassifiedExamples
    from models.loading import checkpoint_labels, load_classifier, load_tokenizer, match_model_to_data
    from trainer import Trainer
    from trainer.run_folder import check_run_name, open_run

    if args.run_name is not None:
        check_run_name(args.run_name)
    # The data is read and checked before the weights are loaded, with the checkpoint's class names and order; a
    # validation file alone is enough (the checkpoint knows its classes).
    alone = bool(args.validation_file and not args.train_file)
    source = source_from_args(args, labels=checkpoint_labels(args.checkpoint, keep_defaults=alone), needs_train=False,
                              labels_from="the checkpoint's classes")
    source.load()
    from models.predictor import pick_device

    try:
        device = pick_device(args.device)
    except ValueError as exc:
        raise cli.UsageError(str(exc)) from None
    trainer = Trainer(limit_val_batches=args.limit_val_batches, precision=args.precision, enable_progress_bar=False,
                      cpu=device == "cpu")
    with open_run(trainer.accelerator, args.output_dir, args.run_name, prefix="evaluate-") as run:
        if trainer.is_main_process:
            print(f"run folder: {os.path.abspath(run.path)}", flush=True)
        tokenizer = load_tokenizer(args.checkpoint)
        datamodule = TextClassificationDataModule(tokenizer, source=source, eval_batch_size=args.batch_size).setup()
        model = load_classifier(args.checkpoint, tokenizer=tokenizer, wandb_charts=args.confusion_matrix)
        match_model_to_data(model, source, args.checkpoint)
        trainer.callbacks = [MisclassifiedExamples(datamodule.sentences["validation"],
                                                   pairs=datamodule.pairs["validation"])]
        trainer.default_root_dir = run.path
        run.logger = trainer.logger = build_run_logger(args, run.path, trainer.is_main_process)
        run.logger.log_hyperparams({**vars(args), "data_dir": source.data_dir, "data": source.describe()})
        run.report, run.step = write_report, lambda: trainer.global_step
        run.start()
        metrics = trainer.validate(model, datamodule.val_dataloader())
    if run.logger_hung:
        cli.exit_hard_after_output()
    if trainer.is_main_process:
        print(json.dumps({k: v for k, v in sorted(metrics.items())}), flush=True)
    return 0
