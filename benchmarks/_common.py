"""What every benchmark worker shares: a clock for optimizer steps, peak memory, FLOP counting and the result line.

A worker is a fresh process (so peak memory and start-up are its own); it prints one `BENCH_RESULT {json}` line.
"""
from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

RESULT_PREFIX = "BENCH_RESULT "


class StepClock:
    """Wall-clock time at the end of each optimizer step, with the padded shape of the batch it trained on."""

    def __init__(self, spawn_time: float, warmup: int = 0, steps: int = 0) -> None:
        self.spawn_time = spawn_time  # time.time() in the parent just before it started this process
        self.warmup, self.steps = warmup, steps
        self.times: list[float] = []
        self.shapes: list[tuple[int, int]] = []
        self.helper_cpu: list[float] = []  # CPU seconds of child processes (W&B's service) at the timed bounds

    def step_done(self, input_ids) -> None:
        """On a GPU the clock waits for the device only at the steps it reads (the first, the last untimed one and the
        last): a wait every step would stop the host from running ahead, as it does in training."""
        import torch

        if input_ids.is_cuda and len(self.times) + 1 in (1, self.warmup, self.steps):
            torch.cuda.synchronize()
        self.times.append(time.time())
        self.shapes.append(tuple(input_ids.shape))
        if len(self.times) in (self.warmup, self.steps):
            self.helper_cpu.append(children_cpu_seconds())

    def result(self, pipeline: str, warmup: int, **extra) -> dict:
        """Samples/s over the steps after the first `warmup` ones, and time from process start to the first step."""
        timed = self.shapes[warmup:]
        seconds = self.times[-1] - self.times[warmup - 1] if warmup else self.times[-1] - self.spawn_time
        return {
            "pipeline": pipeline,
            "steps": len(self.times),
            "samples_per_s": sum(b for b, _ in timed) / seconds,
            "padded_tokens_per_step": statistics.mean(b * n for b, n in timed),
            "step_s": seconds / len(timed),
            "first_step_s": self.times[0] - self.spawn_time,
            "peak_rss_mib": peak_rss_mib(),
            "timed_shapes": timed,
            "timed_s": seconds,
            "helper_cpu_per_step_s": (self.helper_cpu[-1] - self.helper_cpu[0]) / len(timed)
            if len(self.helper_cpu) == 2 else float("nan"),
            **extra,
        }


def children_cpu_seconds() -> float:
    """User + system CPU seconds of every live descendant process (W&B runs its service in one), from /proc."""
    ticks, total, stack = os.sysconf("SC_CLK_TCK"), 0, [os.getpid()]
    try:
        while stack:
            pid = stack.pop()
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    for child in f.read().split():
                        with open(f"/proc/{child}/stat") as stat:
                            fields = stat.read().rsplit(")", 1)[1].split()
                        total += int(fields[11]) + int(fields[12])  # utime, stime
                        stack.append(int(child))
    except OSError:  # not Linux, or a process that ended meanwhile
        return float("nan")
    return total / ticks


def median_seconds(fn, repeats: int) -> float:
    """Median wall time of `repeats` calls of `fn`, after one untimed call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mib() -> float:
    """Peak resident memory of this process (Linux reports KiB). W&B's service process is not counted."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def train_flops(model, shapes: list[tuple[int, int]]) -> float:
    """FLOPs of forward + backward for each (batch, length) in `shapes`, counted by torch's FlopCounterMode on the
    model itself (matrix products and attention), one count per distinct shape. NaN when BENCH_COUNT_FLOPS=0."""
    if os.environ.get("BENCH_COUNT_FLOPS") == "0":
        return float("nan")
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    per_shape = {}
    device = next(model.parameters()).device
    for shape in sorted(set(shapes)):
        ids = torch.randint(0, model.config.vocab_size, shape, device=device)
        counter = FlopCounterMode(display=False)
        with counter:
            out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.zeros(shape[0], dtype=torch.long,
                                                                                               device=device))
            out.loss.backward()
        model.zero_grad(set_to_none=True)
        per_shape[shape] = counter.get_total_flops()
        if not any("attention" in str(op) for op in counter.get_flop_counts()["Global"]):
            # torch has no FLOP formula for the CPU kernel of scaled_dot_product_attention: add its two products
            # (scores and weighted values), forward and backward (twice the forward)
            batch, length = shape
            per_shape[shape] += 3 * 2 * 2 * batch * length**2 * model.config.hidden_size * model.config.num_hidden_layers
    return float(sum(per_shape[s] for s in shapes))


def emit(result: dict) -> None:
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def minilm_path() -> str:
    """all-MiniLM-L6-v2's folder: $MINILM_DIR where set (a machine without the package), else the package's."""
    if os.environ.get("MINILM_DIR"):
        return os.environ["MINILM_DIR"]
    from models.pretrained import resolve_model_path

    return resolve_model_path("minilm")


def run_interleaved(names: list[str], repeats: int, run_one, describe, before_repeat=None, progress=None):
    """Every named pipeline `repeats` times, in forward order on even repeats and backward on odd ones, so drift in
    the machine's speed hits every pipeline alike. `run_one(name)` returns a result dict (a SystemExit costs that
    pipeline its row, not the others'); each result is printed with `describe(result)`, and `progress(runs)` gets
    what is done so far (to write it out in case a time limit stops the whole run). Returns the pipelines that ran."""
    runs: dict[str, list[dict]] = {n: [] for n in names}
    for repeat in range(repeats):
        if before_repeat is not None:
            before_repeat()
        for name in names if repeat % 2 == 0 else names[::-1]:
            try:
                result = run_one(name)
            except SystemExit as exc:
                print(exc, flush=True)
                continue
            runs[name].append(result)
            print(f"repeat {repeat + 1}/{repeats} {name:20s} {describe(result)}", flush=True)
            if progress is not None:
                progress({n: r for n, r in runs.items() if r})
    return {n: r for n, r in runs.items() if r}
