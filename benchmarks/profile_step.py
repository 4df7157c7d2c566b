"""Where an eager training step's time goes: torch.profiler over a few steps of the trainer (all-MiniLM-L6-v2, CoLA,
batch 32 padded to multiples of 16), the operators with the most self time on the device (CUDA when there is one,
else the CPU), and the number of operator calls a step.

    python benchmarks/profile_step.py --data-dir data/cola --precision bf16

For issue #24's question why bf16 was slower than fp32 on an H200: compare the tables of `--precision 32` and
`--precision bf16` (benchmarks/gpu_check.sh runs both).
"""
from __future__ import annotations

import argparse
import sys
import tempfile

from _common import minilm_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default="data/cola")
    p.add_argument("--precision", default="32", help="32 or bf16")
    p.add_argument("--warmup", type=int, default=10, help="steps before the profiled ones")
    p.add_argument("--steps", type=int, default=5, help="profiled steps")
    p.add_argument("--rows", type=int, default=20)
    args = p.parse_args(argv)
    import torch
    from torch.profiler import ProfilerActivity, profile

    from data import TextClassificationDataModule
    from models import SequenceClassifier
    from trainer import Callback, Trainer, seed_everything

    cuda = torch.cuda.is_available()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])

    class Profile(Callback):
        def __init__(self):
            self.done, self.profiler = 0, None

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if self.done == args.warmup:
                if cuda:
                    torch.cuda.synchronize()
                self.profiler = profile(activities=activities)
                self.profiler.__enter__()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self.done += 1
            if self.done == args.warmup + args.steps:
                if cuda:
                    torch.cuda.synchronize()
                self.profiler.__exit__(None, None, None)
                events = self.profiler.key_averages()
                calls = sum(e.count for e in events if e.key.startswith("aten::"))
                print(f"precision {args.precision}, {'cuda' if cuda else 'cpu'}: {calls / args.steps:.0f} aten "
                      f"calls a step (nested ones included), {args.steps} steps profiled")
                sort = "self_cuda_time_total" if cuda else "self_cpu_time_total"
                print(events.table(sort_by=sort, row_limit=args.rows))
                trainer.should_stop = True

    seed_everything(42, deterministic=not cuda)
    model = SequenceClassifier(model_name=minilm_path(), dropout=0.0)
    dm = TextClassificationDataModule(model.tokenizer, data_dir=args.data_dir, batch_size=32, seed=42, cache_dir=None,
                                      pad_to_multiple_of=16).setup()
    trainer = Trainer(max_steps=args.warmup + args.steps, gradient_clip_val=1.0, enable_progress_bar=False,
                      precision=args.precision, callbacks=[Profile()],
                      default_root_dir=tempfile.mkdtemp(prefix="profile-step-"))
    trainer.fit(model, dm.train_dataloader())
    return 0


if __name__ == "__main__":
    sys.exit(main())
