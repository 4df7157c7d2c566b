"""What a run records and where: the tracker flags that train.py and evaluate.py share (--logger, --run-group, the
W&B and MLflow options), the logger they build (the local record, CSV, always; the chosen trackers on top), and the
report written when the run ends."""
from __future__ import annotations

import argparse
import os
import sys

from recipes.cli import comma_list, positive_float


def logger_spec(text: str) -> str:
    from tracking import parse_logger_names

    try:
        return ",".join(parse_logger_names(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_logger_args(p: argparse.ArgumentParser) -> None:
    from models.charts import WANDB_CONFUSION_CHARTS

    p.add_argument("--logger", type=logger_spec, default="csv",
                   help="trackers on top of the local files every run writes, comma-separated: wandb, tensorboard, "
                        "mlflow, csv, none (default: %(default)s)")
    p.add_argument("--run-group", default=None, metavar="NAME",
                   help="a group of runs: the W&B group, the MLflow parent run (sweep.py puts a sweep's trials in one)")
    p.add_argument("--logger-timeout", type=positive_float, default=60.0,
                   help="seconds a tracker may take over one call before it is switched off for the rest of the "
                        "run; training never waits longer (default: %(default)s)")
    g = p.add_argument_group("Weights & Biases (--logger wandb)")
    g.add_argument("--wandb-project", default="MLOps Basics", help="(default: %(default)s)")
    g.add_argument("--wandb-entity", default=None, help="team or user (default: your default entity)")
    g.add_argument("--wandb-mode", choices=["online", "offline", "disabled"], default=None,
                   help="default: $WANDB_MODE, else online when `wandb login` was done and offline when not")
    g.add_argument("--wandb-tags", type=lambda t: tuple(x.strip() for x in t.split(",") if x.strip()), default=(),
                   help="comma-separated run tags")
    g.add_argument("--confusion-matrix", type=comma_list(WANDB_CONFUSION_CHARTS), default=WANDB_CONFUSION_CHARTS,
                   help="the post's three confusion-matrix charts in W&B: wandb (`conf`, wandb.plot), sklearn "
                        "(`cm`, wandb's scikit-learn plot), seaborn (`Confusion Matrix` heatmap image); default: all")
    g = p.add_argument_group("MLflow (--logger mlflow)", "the store is $MLFLOW_TRACKING_URI (such as "
                             "http://127.0.0.1:5000), else <output-dir>/mlflow.db")
    g.add_argument("--mlflow-experiment", default="MLOps Basics", help="experiment name (default: %(default)s)")


def build_run_logger(args, run_dir: str, is_main_process: bool):
    """The run's logger: the local record always (csv), the trackers of --logger on top, only on the main process."""
    from tracking import build_logger

    name = os.path.basename(os.path.normpath(run_dir))
    return build_logger(f"csv,{args.logger}", run_dir, is_main_process, timeout=args.logger_timeout,
                        public_keys=("git_commit",),  # 40 hex digits, as a W&B API key: not a secret
                        project=args.wandb_project, entity=args.wandb_entity, mode=args.wandb_mode, run_name=name,
                        group=args.run_group, tags=args.wandb_tags, mlflow_experiment=args.mlflow_experiment)


# Hyperparameters that differ between any two runs by nature: a comparison of runs does not list them.
NOT_COMPARED = ("run_name", "output_dir", "git_commit", "config", "resume")


def write_report(run_dir: str) -> None:
    """report.html in the run folder, its path printed; a failure here costs the report, never the finished run."""
    from models.report import build_report
    from tracking.files import first_line

    try:
        path = build_report([run_dir], os.path.join(run_dir, "report.html"), ignore=NOT_COMPARED)
        print(f"report: {os.path.abspath(path)}", flush=True)
    except Exception as exc:
        print(f"warning: could not write report.html ({first_line(exc, with_type=True)}); "
              f"try: python scripts/report.py {run_dir}", file=sys.stderr)
