"""Classify sentences with a saved model.

    python scripts/predict.py --checkpoint runs/<run>/checkpoints/best "The boy is sitting on a bench."
    python scripts/predict.py --checkpoint runs/<run>/checkpoints/best --input sentences.txt   # one per line
    cat sentences.txt | python scripts/predict.py --checkpoint runs/<run>/checkpoints/best --input -

Prints one JSON line per sentence, in input order:
{"sentence": "...", "label": "acceptable", "score": 0.9312, "scores": {"unacceptable": 0.0688, "acceptable": 0.9312}}
"""
from __future__ import annotations

import json
import os
import sys

from recipes import cli

REPLACEMENT = "\ufffd"


def build_parser() -> cli.Parser:
    p = cli.Parser(prog="predict.py", description="Classify sentences with a sequence-classification checkpoint "
                    "(any folder that AutoModelForSequenceClassification.from_pretrained loads); label names come "
                    "from the checkpoint's config.")
    p.add_argument("--checkpoint", required=True, type=cli.existing_dir,
                   help="model folder, e.g. runs/<run>/checkpoints/best")
    p.add_argument("--input", default=None, metavar="FILE",
                   help="read sentences from FILE, one per line (blank lines are skipped), or from standard input "
                        "with '-'")
    p.add_argument("--batch-size", type=cli.positive_int, default=64,
                   help="sentences per forward pass; batches group sentences of similar length (default: "
                        "%(default)s)")
    p.add_argument("--decimals", type=cli.non_negative_int, default=4, help="rounding of the scores (default: "
                   "%(default)s)")
    p.add_argument("--device", default="auto", metavar="auto|cpu|cuda[:N]",
                   help="where the model runs (default: auto, a CUDA GPU when there is one)")
    p.add_argument("sentences", nargs="*", metavar="SENTENCE", help="sentences to classify (or use --input)")
    return p


def _utf8(text: str) -> str:
    """A command-line argument as UTF-8 text: bytes that are not UTF-8 (which Python keeps as surrogates) become
    U+FFFD, as when a file is read."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def read_sentences(args):
    """The sentences to classify, lazily: the command line, a file, or standard input."""
    if args.input is None:
        yield from (_utf8(s) for s in args.sentences)
        return
    stream = sys.stdin.buffer if args.input == "-" else open(args.input, "rb")
    with stream:
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if line.strip():
                yield line


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if bool(args.sentences) == (args.input is not None):
        raise cli.UsageError("pass sentences on the command line or --input FILE (or - for standard input), "
                              "one of the two")
    if args.input not in (None, "-") and not os.path.isfile(args.input):
        raise cli.UsageError(f"--input {args.input}: no such file; pass a text file with one sentence per line")
    from models.loading import load_predictor
    from models.predictor import pick_device

    try:
        device = pick_device(args.device)
    except ValueError as exc:
        raise cli.UsageError(str(exc)) from None
    predictor = load_predictor(args.checkpoint, device=device)
    try:
        replaced = write_predictions(predictor, args)
    except BrokenPipeError:  # the reader went away (`| head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    if replaced:
        print(f"warning: {replaced} sentence(s) held bytes that are not UTF-8; they were read with U+FFFD in their "
              "place", file=sys.stderr)
    return 0


def write_predictions(predictor, args) -> int:
    """One JSON line per sentence; returns how many sentences held bytes that are not UTF-8."""
    replaced = 0
    for sentence, probs in predictor.stream(read_sentences(args), batch_size=args.batch_size):
        replaced += REPLACEMENT in sentence
        best = max(range(len(probs)), key=probs.__getitem__)
        print(json.dumps({"sentence": sentence, "label": predictor.labels[best],
                          "score": round(probs[best], args.decimals),
                          "scores": {label: round(p, args.decimals) for label, p in zip(predictor.labels, probs)}}))
    return replaced


if __name__ == "__main__":
    cli.exit(cli.run_main(main))
