"""Per-step host cost of this trainer against a bare PyTorch loop, on a model whose arithmetic is negligible.

    python benchmarks/host_overhead.py --data-dir data/cola
    python benchmarks/host_overhead.py --data-dir data/cola --variants trainer_workers2,bare_deterministic

A tiny random BERT (2 layers, hidden size 32, all-MiniLM-L6-v2's tokenizer and vocabulary) trains on CoLA's
length-grouped batches on whatever device is present, so a step's wall time is almost all host work: Python, kernel
launches, data loading, waits for the device. Pipelines:
  trainer             scripts/train.py with its defaults and `--logger csv` (metrics, NaN guard, gradient clipping,
                      callbacks, progress bar, learning-rate schedule)
  bare                the same model, batches (the same DataLoader, no workers) and fused AdamW: forward, backward,
                      step, zero_grad; nothing else
Variants: trainer_workers2 (`--num-workers 2`, the old default with a GPU), trainer_graphs (`--cuda-graphs on`),
bare_deterministic (the bare loop under torch.use_deterministic_algorithms, as train.py runs).
Each run is a fresh process; the time of steps `--warmup`+1 .. `--warmup`+`--steps` is read after a device
synchronisation at both ends only, so the host may run ahead of the device as it does in training. Runs are
interleaved over `--repeats`; the table gives medians and the median of the per-repeat ratios to the bare loop.
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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import RESULT_PREFIX, ROOT, emit, run_interleaved  # noqa: E402

TRAINER_FLAGS = {"trainer": [], "trainer_workers2": ["--num-workers", "2"], "trainer_graphs": ["--cuda-graphs", "on"]}
BARE = ("bare", "bare_deterministic")


def tiny_model_dir(tokenizer_path: str, folder: str) -> str:
    """A random BERT with 2 layers of hidden size 32 and the given tokenizer, saved as a Hugging Face folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=512, num_labels=2)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


class Window:
    """Wall time between the end of optimizer step `first` and the end of step `last`, synchronised at both ends."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last, self.start, self.seconds = first, last, None, None

    def step_done(self, step: int, device) -> None:
        import torch

        if step in (self.first, self.last):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            now = time.perf_counter()
            if step == self.first:
                self.start = now
            else:
                self.seconds = now - self.start


def run_trainer(args, variant: str) -> dict:
    from recipes import train
    from trainer import Callback

    window = Window(args.warmup, args.warmup + args.steps)

    class Clock(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            window.step_done(trainer.global_step, trainer.accelerator.device)
            if window.seconds is not None:  # the end-of-run validation and report are not what is measured
                finish({"step_s": window.seconds / args.steps})

    argv = ["--data-dir", args.data_dir, "--model", args.model_dir, "--batch-size", str(args.batch_size),
            "--max-steps", str(args.warmup + args.steps), "--limit-val-batches", "1", "--logger", "csv",
            "--output-dir", args.workdir, "--run-name", "bench", *TRAINER_FLAGS[variant]]
    train.main(argv, callbacks=[Clock()])
    raise SystemExit(f"train.py ended before step {window.last} for {variant}")


def run_bare(args, variant: str) -> dict:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from data import TextClassificationDataModule

    if variant == "bare_deterministic":
        from trainer import seed_everything

        seed_everything(42, deterministic=True)
    torch.manual_seed(42)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    loader = TextClassificationDataModule(tokenizer, data_dir=args.data_dir, batch_size=args.batch_size, seed=42,
                            num_workers=0).setup().train_dataloader()
    model = AutoModelForSequenceClassification.from_pretrained(args.model_dir, num_labels=2).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, weight_decay=0.01, fused=True)
    model.train()
    window, step = Window(args.warmup, args.warmup + args.steps), 0
    while step < window.last:
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items() if k != "idx"}
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            window.step_done(step, device)
            if step == window.last:
                break
    finish({"step_s": window.seconds / args.steps})


def finish(result: dict) -> None:
    """Print the result line and leave at once."""
    import torch

    emit({"pipeline": sys.argv[sys.argv.index("--worker") + 1],
          "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
          "torch": torch.__version__, "threads": torch.get_num_threads(), **result})
    sys.stdout.flush()
    os._exit(0)


def worker(args) -> None:
    (run_bare if args.worker in BARE else run_trainer)(args, args.worker)


def spawn(name: str, args, env: dict, log) -> dict:
    workdir = tempfile.mkdtemp(prefix=f"overhead-{name}-", dir=args.tmp)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--data-dir", args.data_dir, "--model-dir",
           args.model_dir, "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--warmup",
           str(args.warmup), "--workdir", workdir]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"error: the {name} run failed (exit code {proc.returncode}); see {log.name}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def summarize(runs: dict[str, list[dict]]) -> dict:
    table = {}
    for name, results in runs.items():
        row = {"step_ms": 1000 * statistics.median(r["step_s"] for r in results),
               "min_ms": 1000 * min(r["step_s"] for r in results), "max_ms": 1000 * max(r["step_s"] for r in results),
               "repeats": len(results)}
        if "bare" in runs and name != "bare":  # per repeat, so drift between repeats cancels
            row["x_bare"] = statistics.median(r["step_s"] / b["step_s"] for r, b in zip(results, runs["bare"]))
        table[name] = row
    return table


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("COLA_DIR") or os.path.join(ROOT, "data", "cola"))
    p.add_argument("--tokenizer", default=None, help="tokenizer folder (default: all-MiniLM-L6-v2's)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=200, help="timed optimizer steps per run (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=20, help="untimed steps first (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=5, help="runs of each pipeline (default: %(default)s)")
    p.add_argument("--variants", default="", help="extra runs: trainer_workers2, trainer_graphs, bare_deterministic")
    p.add_argument("--json", default=None, help="also write every run and the summary to this file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    names = ["trainer", "bare"] + [n for n in args.variants.split(",") if n]
    unknown = [n for n in names if n not in TRAINER_FLAGS and n not in BARE]
    if unknown:
        p.error(f"unknown variant {','.join(unknown)}")
    args.data_dir = os.path.abspath(args.data_dir)
    from throughput import bench_env, warm_token_cache

    with tempfile.TemporaryDirectory(prefix="cola-overhead-") as tmp:
        args.tmp = tmp
        if args.tokenizer is None:
            from _common import minilm_path

            args.tokenizer = minilm_path()
        args.model_dir = tiny_model_dir(args.tokenizer, os.path.join(tmp, "tiny-bert"))
        env = bench_env(tmp)
        warm_token_cache(args.data_dir, env, args.model_dir)
        log_path = os.path.join(tempfile.gettempdir(), "cola-overhead.log")
        with open(log_path, "w") as log:
            runs = run_interleaved(names, args.repeats, lambda name: spawn(name, args, env, log),
                                   lambda r: f"{1000 * r['step_s']:8.3f} ms/step ({r['device']})",
                                   progress=(lambda done: write_json(args, done)) if args.json else None)
    if not runs:
        print(f"error: every run failed; see {log_path}", file=sys.stderr)
        return 1
    table = summarize(runs)
    first = next(iter(runs.values()))[0]
    print(f"\nper-step wall time, tiny BERT (2 layers, hidden 32), batch {args.batch_size}, steps {args.warmup + 1}-"
          f"{args.warmup + args.steps}, medians of {args.repeats}; {first['device']}, torch {first['torch']}, "
          f"{first['threads']} threads")
    for name, row in table.items():
        ratio = f"{row['x_bare']:.3f}x bare" if "x_bare" in row else ""
        print(f"{name:20s} {row['step_ms']:8.3f} ms  ({row['min_ms']:.3f}-{row['max_ms']:.3f})  {ratio}")
    if args.json:
        write_json(args, runs)
    return 0


def write_json(args, runs: dict) -> None:
    with open(args.json, "w") as f:
        json.dump({"args": {k: v for k, v in vars(args).items() if k != "tmp"}, "runs": runs,
                   "summary": summarize(runs)}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
