"""Where one training step of all-MiniLM-L6-v2 spends its time on this machine: forward + backward (fp32 and bf16
autocast) at a few sequence lengths, collating a batch, gradient clipping, and the AdamW step in torch's three
implementations.

    python benchmarks/step_parts.py

Medians of `--repeats` timings in one process; batch 16, dropout off (train.py's defaults).
"""
from __future__ import annotations

import argparse
import sys

from _common import median_seconds, minilm_path


def median_ms(fn, repeats: int) -> float:
    return 1000 * median_seconds(fn, repeats)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--lengths", default="12,24,128", help="padded lengths to time (default: %(default)s)")
    args = p.parse_args(argv)
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2, hidden_dropout_prob=0.0,
                                                               attention_probs_dropout_prob=0.0)
    model.train()
    labels = torch.zeros(16, dtype=torch.long)
    rows = []

    def forward_backward(ids, bf16):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels).loss
        loss.backward()

    for length in [int(n) for n in args.lengths.split(",")]:
        ids = torch.randint(1000, 2000, (16, length))
        for bf16 in (False, True):
            name = f"forward + backward, length {length}, {'bf16 autocast' if bf16 else 'fp32'}"
            rows.append((name, median_ms(lambda: forward_backward(ids, bf16), args.repeats)))
    from transformers import AutoTokenizer, DataCollatorWithPadding

    tokenizer = AutoTokenizer.from_pretrained(minilm_path())
    features = [tokenizer("The sailors rode the breeze clear of the rocks." * (1 + i % 2)) | {"labels": 1}
                for i in range(16)]
    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    rows.append(("collate a batch of 16 (DataCollatorWithPadding, the DataLoader's work)",
                 median_ms(lambda: collate(features), args.repeats)))
    rows.append(("clip_grad_norm_ (all parameters)",
                 median_ms(lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0), args.repeats)))
    for label, kwargs in (("for-loop (default on CPU)", {}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-8, **kwargs)
        rows.append((f"AdamW step, {label}", median_ms(optimizer.step, args.repeats)))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M "
          f"parameters; medians of {args.repeats}")
    for name, ms in rows:
        print(f"{ms:8.1f} ms  {name}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    sys.exit(main())
