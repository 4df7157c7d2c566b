"""Validate a saved model on a validation set with the training run's metrics and loggers.

    python scripts/evaluate.py --checkpoint runs/<run>/checkpoints/best --data-dir ../shared/data/cola
    python scripts/evaluate.py --checkpoint runs/<run>/checkpoints/best --train-file t.csv --validation-file v.csv

Takes the data flags of train.py; the class names and their order are the checkpoint's (config id2label).

The last line on stdout is a JSON object of the metrics.
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts import _cli, _rundir  # noqa: E402
from scripts.train import write_report  # noqa: E402


def build_parser() -> _cli.Parser:
    p = _cli.Parser(prog="evaluate.py", description="Validate a sequence-classification checkpoint (any folder that "
                    "AutoModelForSequenceClassification.from_pretrained loads) on a validation set (CoLA's dev set by "
                    "default).")
    p.add_argument("--checkpoint", required=True, type=_cli.existing_dir,
                   help="model folder, e.g. runs/<run>/checkpoints/best")
    _cli.add_data_args(p)
    p.add_argument("--batch-size", type=_cli.positive_int, default=64, help="(default: %(default)s)")
    p.add_argument("--limit-val-batches", type=_cli.positive_int, default=None,
                   help="use only the first N validation batches")
    p.add_argument("--precision", choices=["32", "bf16", "16"], default="32", help="(default: %(default)s)")
    p.add_argument("--output-dir", default="runs", help="where run folders go (default: %(default)s)")
    p.add_argument("--run-name", default=None, help="run folder name (default: evaluate-<timestamp>)")
    _cli.add_logger_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.run_name is not None:
        _rundir.check_run_name(args.run_name)
    # The data is read and checked before the weights are loaded, with the checkpoint's class names and order.
    source = _cli.load_data_source(args, labels=_cli.checkpoint_labels(args.checkpoint))

    from data import DataError
    from models import SamplesVisualisationLogger
    from tracking import build_logger
    from trainer import Trainer

    trainer = Trainer(limit_val_batches=args.limit_val_batches, precision=args.precision, enable_progress_bar=False)
    run, run_dir, _ = _rundir.open_run(trainer.accelerator, args.output_dir, args.run_name, prefix="evaluate-")
    if trainer.is_main_process:
        print(f"run folder: {os.path.abspath(run_dir)}", flush=True)
    try:
        try:
            tokenizer = _cli.load_tokenizer(args.checkpoint)
            datamodule = _cli.build_datamodule(source, tokenizer, eval_batch_size=args.batch_size)
            model = _cli.load_model(args.checkpoint, label_names=None, tokenizer=tokenizer)  # its own head, names
            _cli.match_model_to_data(model, source, args.checkpoint)
        except (_cli.UsageError, DataError, KeyboardInterrupt):
            if run is not None:
                run.abandon()
            raise
        trainer.callbacks = [SamplesVisualisationLogger(datamodule.sentences["validation"],
                                                        pairs=datamodule.pairs["validation"])]
        trainer.default_root_dir = run_dir
        trainer.logger = build_logger(f"csv,{args.logger}", run_dir, trainer.is_main_process,
                                      **_cli.logger_options(args, os.path.basename(run_dir)))
        trainer.logger.log_hyperparams({**vars(args), "data_dir": source.data_dir, "data": source.describe()})
        if run is not None:
            run.set_status("running")
        status = "failed"
        try:
            metrics = trainer.validate(model, datamodule.val_dataloader())
            status = "finished"
        finally:
            _cli.finalize_logger(trainer.logger, "success" if status == "finished" else status)
            if run is not None:
                run.set_status(status, trainer.global_step)
    finally:
        if run is not None:
            run.release()
    if trainer.is_main_process:
        write_report(run_dir)
        print(json.dumps({k: v for k, v in sorted(metrics.items())}), flush=True)
    return 0


if __name__ == "__main__":
    _cli.exit(_cli.run_main(main))
