"""Score sentences for grammatical acceptability with a saved model.

    python scripts/predict.py --checkpoint runs/<run>/checkpoints/best "The boy is sitting on a bench."

Prints one JSON line per sentence: [{"label": "unacceptable", "score": p}, {"label": "acceptable", "score": q}].
"""
from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scripts import _cli  # noqa: E402


def build_parser() -> _cli.Parser:
    p = _cli.Parser(prog="predict.py", description="Score sentences with a sequence-classification checkpoint (any "
                    "folder that AutoModelForSequenceClassification.from_pretrained loads).")
    p.add_argument("--checkpoint", required=True, type=_cli.existing_dir,
                   help="model folder, e.g. runs/<run>/checkpoints/best")
    p.add_argument("sentences", nargs="+", metavar="SENTENCE", help="one or more sentences to score")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from models import ColaPredictor

    predictor = _cli.load_model(args.checkpoint, loader=ColaPredictor)
    for scores in predictor.predict(args.sentences):
        print(json.dumps(scores))
    return 0


if __name__ == "__main__":
    sys.exit(_cli.run_main(main))
