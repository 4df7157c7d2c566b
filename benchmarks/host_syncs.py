"""On a GPU: which calls make the host wait for the device during training steps (torch's sync debug mode).

    python benchmarks/host_syncs.py --data-dir data/cola [train.py flags, e.g. --precision bf16]

Runs scripts/train.py for 40 steps, watches steps 6-35 and prints each synchronizing call with the code that made it,
split into the steps that write a metrics row (every `--log-every-n-steps`) and the others. The loop is meant to
wait for the device only when it writes a row.
"""
from __future__ import annotations

import collections
import os
import sys
import traceback
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

FIRST, LAST = 6, 35
OURS = ("/trainer/", "/models/", "/data/", "/tracking/", "/scripts/", "transformers/", "accelerate/", "torchmetrics/")


def main(argv=None) -> int:
    import torch

    from recipes import train
    from trainer import Callback

    if not torch.cuda.is_available():
        print("error: no CUDA device; this check needs a GPU", file=sys.stderr)
        return 2
    argv = list(sys.argv[1:] if argv is None else argv)
    records, step = [], {"now": 0}

    def show(message, category, filename, lineno, file=None, line=None):
        if "synchroniz" in str(message):
            frames = [f for f in traceback.extract_stack()[:-1] if any(part in f.filename for part in OURS)]
            records.append((step["now"], " <- ".join(f"{os.path.basename(f.filename)}:{f.lineno} {f.name}"
                                                     for f in frames[::-1][:3])))

    class Watch(Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            step["now"] = trainer.global_step + 1
            if step["now"] == FIRST:
                torch.cuda.set_sync_debug_mode("warn")

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == LAST:
                torch.cuda.set_sync_debug_mode(0)

    warnings.showwarning = show
    warnings.simplefilter("always")
    defaults = ["--max-steps", "40", "--logger", "csv", "--run-name", "host-syncs", "--no-progress-bar"]
    code = train.main(defaults + argv, callbacks=[Watch()])
    every = int(argv[argv.index("--log-every-n-steps") + 1]) if "--log-every-n-steps" in argv else 10
    log_steps = {s for s in range(FIRST, LAST + 1) if s % every == 0}
    counts = collections.Counter(("row" if s in log_steps else "other", where) for s, where in records)
    print(f"synchronizing calls in steps {FIRST}-{LAST}: {len(records)}, of which "
          f"{sum(1 for s, _ in records if s not in log_steps)} in steps that write no row")
    for (kind, where), n in counts.most_common():
        print(f"{n:5d}  {'row step' if kind == 'row' else 'other':9s} {where}")
    return code


if __name__ == "__main__":
    sys.exit(main())
