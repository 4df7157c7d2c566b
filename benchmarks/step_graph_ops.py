"""What a whole-step graph replaces: the operations one training step of all-MiniLM-L6-v2 issues, as the step graph
records them (`Trainer(step_graphs="trace")`, the CPU stand-in of `--cuda-graphs on`), and the step times of eager
and replayed steps on this device.

    python benchmarks/step_graph_ops.py --data-dir data/cola

Each recorded operation is at least one kernel launch on a GPU, where the eager step issues them one by one from
Python and a CUDA graph replays them all in one launch: the count prices the host work a graph removes. The CPU step
times are only a check that replays train at the eager speed here (no launches to save on a CPU); the GPU figures
come from benchmarks/gpu_check.sh. Same seed, batch and padding for both runs; medians of the steps after warm-up.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

from _common import minilm_path


def run(data_dir: str, graphs: str | None, steps: int, batch_size: int, precision: str = "32") -> dict:
    import torch

    from data import TextClassificationDataModule
    from models import SequenceClassifier
    from trainer import Callback, Trainer, seed_everything

    class Clock(Callback):
        def __init__(self):
            self.times, self.replayed, self.last = [], [], None

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            self.last = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            float(outputs)  # the step's work is done (a no-op wait on a CPU)
            self.times.append(time.perf_counter() - self.last)
            self.replayed.append(trainer.graphs is not None and trainer.graphs.replays > sum(self.replayed))

    seed_everything(42, deterministic=True)
    model = SequenceClassifier(model_name=minilm_path(), dropout=0.0)
    dm = TextClassificationDataModule(model.tokenizer, data_dir=data_dir, batch_size=batch_size, seed=42,
                                      cache_dir=None, pad_to_multiple_of=16).setup()
    clock = Clock()
    trainer = Trainer(max_steps=steps, log_every_n_steps=10, gradient_clip_val=1.0, enable_progress_bar=False,
                      callbacks=[clock], step_graphs=graphs, precision=precision,
                      default_root_dir=tempfile.mkdtemp(prefix="step-graph-ops-"))
    trainer.fit(model, dm.train_dataloader())
    result = {"threads": torch.get_num_threads()}
    if graphs:
        g = trainer.graphs
        result["captures"] = [list(s) for s in g.captures]
        result["capture_s"] = round(g.capture_seconds, 2)
        result["ops_per_step"] = [sum(n.op == "call_function" for n in graph.replay.graph.graph.nodes)
                                  for graph in g.graphs.values()]
        replayed = [t for t, r in zip(clock.times, clock.replayed) if r]
        result["replay_step_ms"] = round(1000 * statistics.median(replayed), 1) if replayed else None
        result["replays"] = len(replayed)
    eager = [t for t, r in zip(clock.times, clock.replayed) if not r][3:]  # after the first steps' warm-up
    result["eager_step_ms"] = round(1000 * statistics.median(eager), 1) if eager else None
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default="data/cola")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--precision", default="32", help="32 or bf16 (autocast: its casts are operations too)")
    args = p.parse_args(argv)
    results = {"eager": run(args.data_dir, None, args.steps, args.batch_size, args.precision),
               "trace": run(args.data_dir, "trace", args.steps, args.batch_size, args.precision)}
    json.dump(results, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
