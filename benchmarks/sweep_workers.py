"""Sweep throughput with 1 and 2 workers sharing one study in PostgreSQL, and what the heartbeat costs: trials per
hour on the tiny random BERT of the tests (48 training sentences, 1 epoch a trial), on this machine.

    python benchmarks/sweep_workers.py --trials 8 --repeats 3

Each configuration is a fresh database on a throwaway PostgreSQL server (tests/pg_server.py) and `workers` sweep.py
processes started at once, timed from the first start to the last exit (process start-up included, as a cluster
job pays it). Configurations are interleaved, repeat by repeat, and the medians reported.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

CONFIGS = {  # name -> (workers, heartbeat interval in seconds)
    "1 worker, heartbeat 30 s": (1, 30),
    "2 workers, heartbeat 30 s": (2, 30),
    "1 worker, heartbeat 1 s": (1, 1),
    "1 worker, heartbeat 3600 s": (1, 3600),  # no beat during a trial: what the heartbeat costs, by difference
}


def tiny_setup(folder: str) -> tuple[str, str]:
    """(a tiny random BERT's folder, a tiny CoLA folder), built as the tests build them."""
    from pathlib import Path

    from transformers import BertTokenizerFast

    from conftest import OBJECTS, SUBJECTS, VERBS, save_tiny_model, tiny_rows, write_tsv

    words = sorted({w for part in SUBJECTS + VERBS + OBJECTS for w in part.split()})
    vocab = Path(folder, "vocab.txt")
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + words) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    model = save_tiny_model(Path(folder, "model"), tokenizer)
    cola = Path(folder, "cola")
    cola.mkdir()
    write_tsv(cola / "train.tsv", tiny_rows(48, seed=1))
    write_tsv(cola / "dev.tsv", tiny_rows(20, seed=2))
    return str(model), str(cola)


def run_sweep(url: str, workers: int, heartbeat: int, trials: int, model: str, cola: str, work: str) -> float:
    """Seconds from starting `workers` sweep.py processes on a new study until the last one exits."""
    import pg_server

    storage = pg_server.new_database(url)
    space = os.path.join(work, "space.yaml")
    with open(space, "w") as f:
        f.write("lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    argv = ["--name", "bench", "--storage", storage, "--space", space, "--n-trials", str(trials), "--pruner", "none",
            "--sampler",
            "random", "--heartbeat-interval", str(heartbeat), "--model", model, "--data-dir", cola, "--max-epochs", "1",
            "--log-every-n-steps", "50", "--no-progress-bar"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    start = time.monotonic()
    processes = [subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts", "sweep.py"), *argv, "--output-dir",
                                   os.path.join(work, f"w{i}-{time.time_ns()}")], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True) for i in range(workers)]
    for process in processes:
        _, err = process.communicate()
        if process.returncode != 0:
            raise RuntimeError(err[-3000:])
    return time.monotonic() - start


def main() -> int:
    import pg_server

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as work:
        model, cola = tiny_setup(work)
        folder = tempfile.mkdtemp(prefix="pg-bench-")
        url = pg_server.start(folder)
        try:
            times: dict[str, list[float]] = {name: [] for name in CONFIGS}
            for repeat in range(args.repeats):
                for name, (workers, heartbeat) in CONFIGS.items():
                    times[name].append(run_sweep(url, workers, heartbeat, args.trials, model, cola, work))
                    print(f"repeat {repeat}: {name}: {times[name][-1]:.1f} s", file=sys.stderr, flush=True)
        finally:
            pg_server.stop(folder)
    rows = {name: {"median_s": statistics.median(t), "trials_per_hour": args.trials * 3600 / statistics.median(t),
                   "runs_s": [round(x, 1) for x in t]} for name, t in times.items()}
    for name, row in rows.items():
        print(f"{name}: {row['trials_per_hour']:.0f} trials/hour (median {row['median_s']:.1f} s for {args.trials} "
              f"trials; runs {row['runs_s']})")
    print(json.dumps(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
