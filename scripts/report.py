"""Write one self-contained HTML report of one or more run folders (the CSV backend's files).

    python scripts/report.py runs/<run>                          # -> runs/<run>/report.html
    python scripts/report.py runs/a runs/b -o compare.html       # best metrics side by side, overlaid curves

The file needs no network to open: images are embedded and the sorting/filtering script is inline.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts import _cli  # noqa: E402


def build_parser() -> _cli.Parser:
    p = _cli.Parser(prog="report.py", description="Write a self-contained HTML report of run folders written by "
                    "train.py or evaluate.py with the csv logger: curves, confusion matrix, ROC and precision-recall "
                    "curves, misclassified examples, hyperparameters, best checkpoint.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", type=_cli.existing_dir, help="run folders to report on")
    p.add_argument("-o", "--output", default=None,
                   help="HTML file to write (default: RUN_DIR/report.html for one run, report.html for several)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from tracking.report import build_report

    output = args.output or (os.path.join(args.runs[0], "report.html") if len(args.runs) == 1 else "report.html")
    try:
        path = build_report(args.runs, output)
    except FileNotFoundError as exc:
        raise _cli.UsageError(str(exc)) from None
    print(f"report: {os.path.abspath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run_main(main))
