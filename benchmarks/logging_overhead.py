"""What logging costs the training loop, for each backend: none, csv, wandb (offline), csv and wandb together.

    python benchmarks/logging_overhead.py --data-dir data/cola

1. Per `log_metrics` call, in this process, through `tracking.build_logger` as train.py builds it: the time the
   training loop waits (the call only queues the row for the backend's thread) and the time the backend itself
   spends writing the row (the same rows written straight to an unguarded backend).
2. Per training step: scripts/train.py (all-MiniLM-L6-v2, batch 16, `log_every_n_steps` 10) with each `--logger`,
   each run in a fresh process, repeated and interleaved; the median step time against the `none` runs, and the CPU
   time W&B's service process used per step.
3. An upper bound of the share of a step that logging takes: (wait + backend work per call) / 10 + the service's CPU
   per step, over the step time without logging. On 2 busy cores, CPU used by logging is CPU the step loses; this
   bound does not drown in the few-percent noise of step times on a shared machine.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _common import ROOT  # noqa: E402
from throughput import bench_env, spawn, warm_token_cache  # noqa: E402

BACKENDS = {"none": "nolog", "csv": "csv", "wandb": "wandb", "csv,wandb": "ours"}  # --logger -> throughput variant
ROW = {"train/loss_step": 0.6931, "train/acc_step": 0.5, "epoch": 0}


def call_costs(spec: str, calls: int, tmp: str) -> dict:
    """Seconds per `log_metrics` call: waited by the loop (guarded, as train.py logs) and spent by the backend."""
    from tracking import build_logger
    from tracking.factory import BACKENDS as MAKERS, parse_logger_names

    logger = build_logger(spec, tempfile.mkdtemp(dir=tmp), run_name="overhead")
    waits = []
    for step in range(calls):
        start = time.perf_counter()
        logger.log_metrics(dict(ROW), step=step)
        waits.append(time.perf_counter() - start)
    logger.finalize()
    work = 0.0
    for name in parse_logger_names(spec):
        backend = MAKERS[name](tempfile.mkdtemp(dir=tmp), run_name="overhead-direct")
        start = time.perf_counter()
        for step in range(calls):
            backend.log_metrics(dict(ROW), step=step)
        work += (time.perf_counter() - start) / calls
        backend.finalize()
    return {"wait_s": statistics.median(waits), "wait_mean_s": statistics.mean(waits), "backend_s": work}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("COLA_DIR") or os.path.join(ROOT, "data", "cola"))
    p.add_argument("--calls", type=int, default=500, help="log_metrics calls per backend (default: %(default)s)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per training run (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=5, help="training runs per backend (default: %(default)s)")
    p.add_argument("--log-every-n-steps", type=int, default=10, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="cola-logging-") as tmp:
        env = {**bench_env(tmp), "BENCH_COUNT_FLOPS": "0"}
        os.environ.update(env)
        costs = {spec: call_costs(spec, args.calls, tmp) for spec in BACKENDS}
        warm_token_cache(os.path.abspath(args.data_dir), env)
        run_args = SimpleNamespace(data_dir=os.path.abspath(args.data_dir), batch_size=16, steps=args.steps,
                                   warmup=args.warmup, tmp=tmp)
        steps = {spec: [] for spec in BACKENDS}
        helper = {spec: [] for spec in BACKENDS}
        with open(os.path.join(tempfile.gettempdir(), "cola-logging.log"), "w") as log:
            for repeat in range(args.repeats):
                order = list(BACKENDS) if repeat % 2 == 0 else list(BACKENDS)[::-1]
                for spec in order:
                    result = spawn(BACKENDS[spec], run_args, env, log)
                    steps[spec].append(result["step_s"])
                    helper[spec].append(result["helper_cpu_per_step_s"])
                    print(f"repeat {repeat + 1}/{args.repeats} --logger {spec:10s} {1000 * result['step_s']:.1f} ms "
                          "a step", flush=True)
    base = statistics.median(steps["none"])
    rows = {}
    for spec in BACKENDS:
        step = statistics.median(steps[spec])
        rows[spec] = {
            "wait_us_per_call": 1e6 * costs[spec]["wait_s"],
            "backend_us_per_call": 1e6 * costs[spec]["backend_s"],
            "step_ms": 1000 * step,
            "step_vs_none": step / base - 1,
            "step_min_ms": 1000 * min(steps[spec]),
            "step_max_ms": 1000 * max(steps[spec]),
            "wandb_service_cpu_ms_per_step": 1000 * statistics.median(helper[spec]),
        }
        # What logging can take from a step at most: the loop's wait, the backend threads' work (which competes
        # for the CPU) and W&B's service process, each per step, against the step time without logging.
        per_step = (costs[spec]["wait_mean_s"] + costs[spec]["backend_s"]) / args.log_every_n_steps
        rows[spec]["bound_share_of_step"] = (per_step + statistics.median(helper[spec])) / base
    print(f"\n{args.calls} log_metrics calls per backend; step times: medians of {args.repeats} runs of {args.steps} "
          f"steps (steps {args.warmup + 1}-{args.steps} timed), a row written every {args.log_every_n_steps} steps")
    print(pd.DataFrame(rows).T.to_string(float_format=lambda v: f"{v:.3g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
