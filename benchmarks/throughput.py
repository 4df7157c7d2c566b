"""Training throughput of this project against the seed's Lightning pipeline and a bare PyTorch loop.

    pip install -e ".[bench]"
    python benchmarks/throughput.py --data-dir data/cola

Same model (all-MiniLM-L6-v2), data (CoLA train), batch size and number of optimizer steps for every pipeline:
  ours            scripts/train.py with its defaults and `--logger csv,wandb` (W&B offline)
  lightning_seed  the blog post's PyTorch Lightning pipeline: padding to 128, WandbLogger offline (baselines.py)
  bare_loop       plain PyTorch, per-batch padding, no logging (baselines.py)
Each pipeline runs in a fresh process, `--repeats` times, interleaved; medians are reported. Throughput counts the
steps after the first `--warmup` ones; time to first step runs from the process start to the end of the first
optimizer step (imports, model and data loading included). `--variants` adds runs of this trainer with other
settings (bf16, compile, workers2, dropout01, nolog, csv, graphs, csv_bf16, graphs_bf16, eager_pad16). On a GPU every
pipeline trains there; the "ours" variants take `--logger csv` where W&B is not installed. The same run measures a large matrix product, the CPU's
practical peak, to say how close the training steps get to it.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import (RESULT_PREFIX, ROOT, StepClock, emit, median_seconds, minilm_path, run_interleaved,  # noqa: E402
                     train_flops)

VARIANTS = {  # name -> extra scripts/train.py arguments
    "ours": [],
    "bf16": ["--precision", "bf16"],
    "compile": ["--compile"],
    "workers2": ["--num-workers", "2"],
    "dropout01": ["--dropout", "0.1"],
    "nolog": ["--logger", "none"],
    "csv": ["--logger", "csv"],
    "wandb": ["--logger", "wandb"],
    "graphs": ["--logger", "csv", "--cuda-graphs", "on"],
    "csv_bf16": ["--logger", "csv", "--precision", "bf16"],
    "graphs_bf16": ["--logger", "csv", "--cuda-graphs", "on", "--precision", "bf16"],
    "eager_pad16": ["--logger", "csv", "--pad-to-multiple-of", "16"],
}


def ours(data_dir, batch_size, steps, warmup, clock: StepClock, workdir, variant="ours") -> None:
    """scripts/train.py as a user runs it, stopped after `steps` optimizer steps; it then validates on the whole
    dev set, as at every epoch end, and that validation is timed too."""
    from recipes import train
    from trainer import Callback

    class Clock(Callback):
        def __init__(self):
            self.validation = []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            clock.step_done(batch["input_ids"])

        def on_validation_start(self, trainer, module):
            self.validation.append(time.perf_counter())

        def on_validation_end(self, trainer, module):
            self.validation[-1] = time.perf_counter() - self.validation[-1]
            self.model = module.model

    timer = Clock()
    import importlib.util

    default_logger = "csv,wandb" if importlib.util.find_spec("wandb") else "csv"
    argv = ["--data-dir", data_dir, "--model", minilm_path(), "--batch-size", str(batch_size), "--max-steps", str(steps),
            "--logger", default_logger, "--output-dir", workdir, "--run-name", "bench",
            *VARIANTS[variant]]  # a later --logger wins
    if train.main(argv, callbacks=[timer]) != 0:
        raise SystemExit(f"train.py failed for variant {variant}")
    model = getattr(timer.model, "_orig_mod", timer.model)
    emit(clock.result(variant, warmup, validation_s=timer.validation[0], flops=train_flops(model, clock.shapes[warmup:])))


def matmul_peak(size: int = 2048, repeats: int = 10, budget_s: float = 0.5) -> dict:
    """FLOP/s of a large fp32 (and bf16) matrix product with torch's default threads: the practical peak. A dtype
    the CPU has no fast kernel for (bf16 without AVX512-BF16 or AMX takes ~50 s for one 2048^3 product) is measured
    on the largest power-of-two size whose product fits in `budget_s`, so the benchmark never stalls on it."""
    import torch

    out = {}
    for dtype in (torch.float32, torch.bfloat16):
        n = 256
        while n < size:
            a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
            start = time.perf_counter()
            a @ b
            if (time.perf_counter() - start) * 8 > budget_s:  # the next size takes 8x as long
                break
            n *= 2
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        out[str(dtype).replace("torch.", "")] = 2 * n**3 / median_seconds(lambda: a @ b, repeats)
        out[f"{str(dtype).replace('torch.', '')}_size"] = n
    out["threads"] = torch.get_num_threads()
    return out


def worker(args) -> None:
    from baselines import bare_loop, lightning_seed

    clock = StepClock(args.spawn_time, args.warmup, args.steps)
    run = {"lightning_seed": lightning_seed, "bare_loop": bare_loop}.get(args.worker)
    if run is None:
        ours(args.data_dir, args.batch_size, args.steps, args.warmup, clock, args.workdir, variant=args.worker)
    else:
        run(args.data_dir, args.batch_size, args.steps, args.warmup, clock, args.workdir)


def spawn(name: str, args, env: dict, log) -> dict:
    workdir = tempfile.mkdtemp(prefix=f"bench-{name}-", dir=args.tmp)
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", name, "--data-dir", args.data_dir, "--batch-size",
           str(args.batch_size), "--steps", str(args.steps), "--warmup", str(args.warmup), "--workdir", workdir,
           "--spawn-time", repr(time.time())]
    proc = subprocess.run(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    shutil.rmtree(workdir, ignore_errors=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"error: the {name} run failed (exit code {proc.returncode}); see {log.name}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def summarize(runs: dict[str, list[dict]], peaks: list[dict]) -> dict:
    fp32_peak = statistics.median([p["float32"] for p in peaks])
    table = {}
    for name, results in runs.items():
        row = {
            "samples_per_s": statistics.median([r["samples_per_s"] for r in results]),
            "step_ms": 1000 * statistics.median([r["step_s"] for r in results]),
            "first_step_s": statistics.median([r["first_step_s"] for r in results]),
            "peak_rss_mib": statistics.median([r["peak_rss_mib"] for r in results]),
            "padded_tokens_per_step": statistics.median([r["padded_tokens_per_step"] for r in results]),
            "gflop_per_s": statistics.median([r["flops"] / r["timed_s"] for r in results]) / 1e9,
            "repeats": len(results),
        }
        row["of_matmul_peak"] = row["gflop_per_s"] * 1e9 / fp32_peak
        if "validation_s" in results[0]:
            row["validation_s"] = statistics.median([r["validation_s"] for r in results])
        table[name] = row
    for name, row in table.items():
        for base in ("lightning_seed", "bare_loop"):
            if base in table:
                row[f"x_{base}"] = row["samples_per_s"] / table[base]["samples_per_s"]
    return {"pipelines": table, "matmul_gflop_per_s": {"float32": fp32_peak / 1e9,
                                                       "bfloat16": statistics.median([p["bfloat16"] for p in peaks]) / 1e9},
            "threads": peaks[0]["threads"]}


def print_summary(summary: dict, args) -> None:
    import pandas as pd

    frame = pd.DataFrame(summary["pipelines"]).T
    columns = ["samples_per_s", "x_lightning_seed", "x_bare_loop", "step_ms", "padded_tokens_per_step",
               "first_step_s", "peak_rss_mib", "validation_s", "gflop_per_s", "of_matmul_peak", "repeats"]
    frame = frame[[c for c in columns if c in frame.columns]]
    print(f"\nmedians of {args.repeats} runs, {args.steps} optimizer steps of batch {args.batch_size} each "
          f"(throughput over steps {args.warmup + 1}-{args.steps}); torch threads: {summary['threads']}")
    print(frame.to_string(float_format=lambda v: f"{v:.3g}", na_rep="-"))
    peak = summary["matmul_gflop_per_s"]
    print(f"large matmul (2048^3) in this run: {peak['float32']:.1f} GFLOP/s fp32, {peak['bfloat16']:.1f} GFLOP/s bf16")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("COLA_DIR") or os.path.join(ROOT, "data", "cola"))
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per run (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=5, help="first steps left out of throughput (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each pipeline (default: %(default)s)")
    p.add_argument("--pipelines", default="ours,lightning_seed,bare_loop")
    p.add_argument("--variants", default="", help=f"extra runs of this trainer: {','.join(list(VARIANTS)[1:])}")
    p.add_argument("--json", default=None, help="also write every run and the summary to this file")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    p.add_argument("--spawn-time", type=float, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    names = [n for n in args.pipelines.split(",") + args.variants.split(",") if n]
    unknown = [n for n in names if n not in VARIANTS and n not in ("lightning_seed", "bare_loop")]
    if unknown or args.warmup >= args.steps:
        p.error(f"unknown pipeline or variant {','.join(unknown)}" if unknown else "--warmup must be below --steps")
    args.data_dir = os.path.abspath(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="cola-bench-") as tmp:
        args.tmp = tmp
        env = bench_env(tmp)
        warm_token_cache(args.data_dir, env, minilm_path())
        log_path = os.path.join(tempfile.gettempdir(), "cola-bench.log")
        peaks: list[dict] = []

        def progress(done):
            with open(args.json, "w") as f:
                json.dump({"runs": done, "peaks": peaks, "summary": summarize(done, peaks)}, f, indent=1)

        with open(log_path, "w") as log:
            runs = run_interleaved(names, args.repeats, lambda name: spawn(name, args, env, log),
                                   lambda r: f"{r['samples_per_s']:7.1f} samples/s, first step after "
                                             f"{r['first_step_s']:.1f} s",
                                   before_repeat=lambda: peaks.append(matmul_peak()),
                                   progress=progress if args.json else None)
    if not runs:
        print(f"error: every run failed; see {log_path}", file=sys.stderr)
        return 1
    summary = summarize(runs, peaks)
    print_summary(summary, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": {k: v for k, v in vars(args).items() if k != "tmp"}, "runs": runs, "peaks": peaks,
                       "summary": summary}, f, indent=1)
    return 0


def bench_env(tmp: str) -> dict:
    """W&B offline, and every cache and W&B folder inside `tmp`."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "TOKENIZERS_PARALLELISM": "false",
           "TEXT_CLASSIFIER_CACHE": os.path.join(tmp, "cache"), "PYTHONUNBUFFERED": "1"}
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "MPLCONFIGDIR"):
        env[var] = os.path.join(tmp, var.lower())
    return env


def warm_token_cache(data_dir: str, env: dict, model: str = "minilm") -> None:
    """Fill the tokenization cache first, as any earlier run on the machine would have: every timed run of this
    trainer then starts the way a user's second run does."""
    code = ("import sys; sys.path.insert(0, '.'); from transformers import AutoTokenizer; from data import "
            "TextClassificationDataModule as DM; from models.pretrained import resolve_model_path; "
            f"DM(AutoTokenizer.from_pretrained(resolve_model_path({model!r})), data_dir={data_dir!r}).setup()")
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True)


if __name__ == "__main__":
    sys.exit(main())
