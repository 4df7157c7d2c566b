"""How long `scripts/predict.py` takes to classify many sentences, and its peak memory.

    python benchmarks/predict_speed.py --data-dir data/cola --sentences 10000

Writes N sentences (CoLA's training sentences, repeated as needed) to a temporary file, runs predict.py on it in a
fresh process `--repeats` times (all-MiniLM-L6-v2 by default, the shipped weights with a new head), and prints the
wall-clock median and the peak resident memory of the process. Checks that every sentence got one JSON line.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", required=True, help="folder with CoLA's train.tsv")
    p.add_argument("--sentences", type=int, default=10_000)
    p.add_argument("--checkpoint", default=None, help="model folder (default: all-MiniLM-L6-v2 with a new head)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="auto", help="predict.py's --device (default: auto)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = args.checkpoint or os.path.join(tmp, "minilm")
        if args.checkpoint is None:
            sys.path.insert(0, ROOT)
            from models import SequenceClassifier

            SequenceClassifier(label_names=("unacceptable", "acceptable")).save_pretrained(checkpoint)
        with open(os.path.join(args.data_dir, "train.tsv"), encoding="utf-8") as f:
            train = [line.rstrip("\n").split("\t")[3] for line in f if line.strip()]
        sentences = [train[i % len(train)] for i in range(args.sentences)]
        path = os.path.join(tmp, "sentences.txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(sentences) + "\n")
        walls, peaks = [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            done = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "predict.py"), "--checkpoint",
                                   checkpoint, "--input", path, "--batch-size", str(args.batch_size), "--device",
                                   args.device],
                                  capture_output=True, text=True)
            if done.returncode:
                print(f"predict.py exited {done.returncode}: {done.stderr.strip()[-2000:]}", file=sys.stderr)
                return done.returncode
            walls.append(time.perf_counter() - start)
            peaks.append(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)  # KiB -> MiB, max so far
            lines = done.stdout.splitlines()
            assert len(lines) == len(sentences) and json.loads(lines[-1])["sentence"] == sentences[-1]
    print(json.dumps({"sentences": args.sentences, "batch_size": args.batch_size, "device": args.device,
                      "wall_s": [round(w, 2) for w in walls],
                      "median_wall_s": round(statistics.median(walls), 2),
                      "sentences_per_s": round(args.sentences / statistics.median(walls), 1),
                      "peak_rss_mib": round(max(peaks))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
