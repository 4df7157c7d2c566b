"""Write one self-contained HTML report of one or more run folders (models/report.py).

    python scripts/report.py runs/<run>                          # -> runs/<run>/report.html
    python scripts/report.py runs/a runs/b -o compare.html       # best metrics side by side, overlaid curves

The file needs no network to open: images are embedded and the sorting/filtering script is inline.
"""
import os

from recipes import cli


def build_parser() -> cli.Parser:
    p = cli.Parser(prog="report.py", description="Write a self-contained HTML report of run folders written by "
                   "train.py or evaluate.py: curves, confusion matrix, ROC and precision-recall curves, misclassified "
                   "examples, hyperparameters, best checkpoint.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", type=cli.existing_dir, help="run folders to report on")
    p.add_argument("-o", "--output", default=None,
                   help="HTML file to write (default: RUN_DIR/report.html for one run, report.html for several)")
    return p


def main(argv: list[str] | None = None) -> int:
    from models.report import build_report
    from recipes.record import NOT_COMPARED

    args = build_parser().parse_args(argv)
    output = args.output or (os.path.join(args.runs[0], "report.html") if len(args.runs) == 1 else "report.html")
    try:
        path = build_report(args.runs, output, ignore=NOT_COMPARED)
    except FileNotFoundError as exc:
        raise cli.UsageError(str(exc)) from None
    from trainer.run_folder import describe_status, read_status

    for run in args.runs:  # a run that did not finish says so; one whose writer died, that it did
        status = read_status(run)
        if status.get("status") not in (None, "finished"):
            print(f"{run}: {describe_status(status)}")
    print(f"report: {os.path.abspath(path)}")
    return 0


if __name__ == "__main__":
    cli.exit(cli.run_main(main))
