#!/usr/bin/env bash
# Every GPU figure issues #12 and #24 ask for, in one run of under 8 minutes on a bare GPU machine (torch,
# transformers, accelerate and lightning installed; not this project's other dependencies; no network).
#
#   bash benchmarks/make_gpu_carry.sh      # here, once: builds .gpu/ (wheels, all-MiniLM-L6-v2 in bf16, CoLA)
#   bash benchmarks/gpu_check.sh           # there, from the repository root, with .gpu/ carried along
#   GPU_CHECK_QUICK=1 GPU_CHECK_DEADLINE=2400 bash benchmarks/gpu_check.sh   # a few steps of each, to test the
#                                          # script on a CPU (limits x4: compiling on a CPU is slow)
#
# Steps, most important first; each has its own time limit and a failure skips only that step:
#   1 eager3    the default run (3 epochs of batch 32, eager: --cuda-graphs auto is off), wall clock incl. start-up,
#               valid/mcc per epoch
#   2 graphs3   the same with --cuda-graphs on (whole-step graphs): wall clock (target <= 25 s), valid/mcc per epoch
#               within 0.005 of eager, capture time of all shapes (target <= 2 s; the run prints it)
#   3 perstep   benchmarks/throughput.py at batch 32: bare eager loop, this trainer eager (--logger csv), with
#               graphs (target <= 3 ms), bf16 eager and bf16 with graphs (per-step medians; one run each)
#   4 predict   benchmarks/predict_speed.py: 10,000 sentences with predict.py --device cuda, then --device cpu
#   5 bf16g3    the default run with --precision bf16 --cuda-graphs on (issue #24: bf16 no slower than fp32?)
#   6 overhead  benchmarks/host_overhead.py: tiny BERT, this trainer against a bare loop, plus graphs
#   7 profile   benchmarks/profile_step.py, eager fp32 then bf16: where bf16's extra time goes (profile_*.txt)
# The summary adds the break-even: capture seconds / (eager - graph step time), the steps from which
# --cuda-graphs auto should capture (trainer/step_graph.py BREAK_EVEN_STEPS; the default run has 804 steps).
# Results go to $OUT (summary.md, results.json, log.txt, the benchmarks' JSON, the runs' metrics.csv); the summary
# table is printed last.
set -u
cd "$(dirname "$0")/.."
ROOT="$(pwd)"
START=$(date +%s)
DEADLINE=${GPU_CHECK_DEADLINE:-450}  # seconds for all steps: 7.5 min, under the 8 the lead has
QUICK=${GPU_CHECK_QUICK:-0}
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/gpu-check-out}
WORK=${GPU_CHECK_WORK:-/tmp/gpu-check}
CARRY="$ROOT/.gpu"
WHEELS=${GPU_CHECK_WHEELS:-$CARRY/wheels}
mkdir -p "$OUT" "$WORK"
LOG="$OUT/log.txt"
: > "$LOG"
exec > >(tee -a "$LOG") 2>&1

export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export WANDB_MODE=offline MPLCONFIGDIR="$WORK/mpl" TEXT_CLASSIFIER_CACHE="$WORK/cache" BENCH_COUNT_FLOPS=0
export COLA_DIR="$ROOT/data/cola" MINILM_DIR="$WORK/minilm"
export PYTHONPATH="$WORK/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}"

left() { echo $(( DEADLINE - ($(date +%s) - START) )); }
# step NAME BUDGET_S COMMAND...: run with a limit of min(BUDGET, time left), record rc and seconds in $WORK/steps
SCALE=${GPU_CHECK_LIMIT_SCALE:-$([[ "$QUICK" == 1 ]] && echo 4 || echo 1)}  # a CPU compiles far slower
ONLY=${GPU_CHECK_STEPS:-}  # e.g. "graphs5 overhead": run only these steps (a second, shorter try)
step() {
  local name=$1 budget=$(( $2 * SCALE )); shift 2
  if [[ -n "$ONLY" && " $ONLY " != *" $name "* ]]; then return; fi
  local remain; remain=$(left)
  (( budget > remain - 5 )) && budget=$(( remain - 5 ))
  if (( budget < 20 )); then
    echo "=== $name: skipped, $remain s left"; echo "$name skipped 0" >> "$WORK/steps"; return
  fi
  echo "=== $name (limit ${budget}s, $(( $(date +%s) - START ))s elapsed): $*"
  local t0=$(date +%s)
  timeout --kill-after=10 "$budget" "$@"
  local rc=$?
  echo "=== $name: exit $rc after $(( $(date +%s) - t0 ))s"
  echo "$name $rc $(( $(date +%s) - t0 ))" >> "$WORK/steps"
}

echo "=== set-up"
rm -f "$WORK/steps"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv 2>/dev/null || echo "no nvidia-smi"
rm -rf "$WORK/site" && mkdir -p "$WORK/site"
if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$WORK/site" "$WHEELS"/*.whl; then
  echo "pip failed; unpacking the wheels (all pure Python) instead"
  "$PY" -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in sys.argv[2:]]' "$WORK/site" "$WHEELS"/*.whl
fi
"$PY" - "$CARRY/minilm" "$MINILM_DIR" <<'PY'
import lzma, os, shutil, sys

import torch
from safetensors.torch import load, save_file

src, dst = sys.argv[1], sys.argv[2]
os.makedirs(dst, exist_ok=True)
for name in os.listdir(src):
    if not name.startswith("model."):
        shutil.copy(os.path.join(src, name), dst)
if not os.path.isfile(os.path.join(dst, "model.safetensors")):
    with lzma.open(os.path.join(src, "model.bf16.safetensors.xz")) as f:
        tensors = load(f.read())
    save_file({k: v.float() if v.is_floating_point() else v for k, v in tensors.items()},
              os.path.join(dst, "model.safetensors"))
print(f"all-MiniLM-L6-v2 restored to fp32 from bf16 in {dst}")
PY
"$PY" - <<'PY'
import importlib

for name in ("torch", "transformers", "accelerate", "lightning", "torchmetrics", "datasets", "triton"):
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except Exception as exc:
        print(f"{name}: not importable ({type(exc).__name__}: {exc})")
import torch

print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "")
import data, models, trainer  # noqa: F401  this project, from the working tree
PY

if [[ "$QUICK" == 1 ]]; then
  RUN3=(--max-steps 3 --limit-val-batches 2); PERSTEP=(--steps 4 --warmup 1 --repeats 1)
  OVER=(--steps 5 --warmup 2 --repeats 1); SENTENCES=200; PROFILE=(--warmup 2 --steps 2)
else
  REPEATS=${GPU_CHECK_REPEATS:-1}
  RUN3=(); PERSTEP=(--steps 120 --warmup 20 --repeats "$REPEATS"); OVER=(--steps 200 --warmup 20 --repeats "$REPEATS")
  SENTENCES=10000; PROFILE=(--warmup 20 --steps 10)
fi
PIPELINES=${GPU_CHECK_PIPELINES:-csv,bare_loop}
VARIANTS=${GPU_CHECK_VARIANTS:-graphs,csv_bf16,graphs_bf16}
OVER_VARIANTS=${GPU_CHECK_OVER_VARIANTS:-trainer_graphs,bare_deterministic}
# The default recipe (3 epochs of batch 32; README "Quality"), as a user runs it
TRAIN=("$PY" scripts/train.py --model "$MINILM_DIR" --data-dir "$COLA_DIR" --logger csv --no-progress-bar
       --output-dir "$WORK/runs" "${RUN3[@]}")

step eager3 90 "${TRAIN[@]}" --run-name eager
step graphs3 90 "${TRAIN[@]}" --run-name graphs --cuda-graphs on
step perstep 150 "$PY" benchmarks/throughput.py --data-dir "$COLA_DIR" --batch-size 32 "${PERSTEP[@]}" \
  --pipelines "$PIPELINES" --variants "$VARIANTS" --json "$OUT/throughput.json"
step predict 70 bash -c "'$PY' benchmarks/predict_speed.py --data-dir '$COLA_DIR' --checkpoint '$WORK/runs/eager/checkpoints/best' \
  --sentences $SENTENCES --repeats 1 --device cuda > '$OUT/predict_cuda.json'; '$PY' benchmarks/predict_speed.py \
  --data-dir '$COLA_DIR' --checkpoint '$WORK/runs/eager/checkpoints/best' --sentences $SENTENCES --repeats 1 \
  --device cpu > '$OUT/predict_cpu.json'"
step bf16g3 70 "${TRAIN[@]}" --run-name bf16g --precision bf16 --cuda-graphs on
step overhead 60 "$PY" benchmarks/host_overhead.py --data-dir "$COLA_DIR" --tokenizer "$MINILM_DIR" --batch-size 32 \
  "${OVER[@]}" --variants "$OVER_VARIANTS" --json "$OUT/host_overhead.json"
step profile 60 bash -c "for p in 32 bf16; do '$PY' benchmarks/profile_step.py --data-dir '$COLA_DIR' --precision \$p \
  ${PROFILE[*]} > '$OUT/profile_'\$p.txt 2>&1; grep '^precision' '$OUT/profile_'\$p.txt; done"

for run in eager graphs bf16g; do
  cp "$WORK/runs/$run/metrics.csv" "$OUT/${run}_metrics.csv" 2>/dev/null
done
echo "=== summary ($(( $(date +%s) - START ))s elapsed)"
"$PY" - "$WORK" "$OUT" "$LOG" <<'PY'
import json, os, sys

work, out, log = sys.argv[1:4]
steps = {}
for line in open(os.path.join(work, "steps")):
    name, rc, seconds = line.split()
    steps[name] = {"exit": rc, "seconds": int(seconds)}
text = open(log, errors="replace").read()


def best(run):
    """The run's wall clock (its step's seconds, start-up and validation included) and best valid/mcc."""
    try:
        import pandas as pd

        frame = pd.read_csv(os.path.join(work, "runs", run, "metrics.csv"))
        return float(frame["valid/mcc"].max()), [round(v, 4) for v in frame["valid/mcc"].dropna()]
    except Exception as exc:
        return None, f"{type(exc).__name__}"


def load(name):
    try:
        return json.load(open(os.path.join(out, name)))["summary"]
    except Exception:
        return None


results = {"steps": steps, "device": None}
rows = []
try:
    import torch

    results["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    results["torch"] = torch.__version__
except Exception:
    pass
for run, step in (("eager", "eager3"), ("graphs", "graphs3"), ("bf16g", "bf16g3")):
    mcc, curve = best(run)
    results[f"{run}_default_run"] = {"mcc_best": mcc, "mcc_per_epoch": curve, **steps.get(step, {})}
    rows.append((f"default 3-epoch CoLA run, {run} ({step})", f"{steps.get(step, {}).get('seconds', '-')} s wall, "
                 f"best valid/mcc {mcc if mcc is None else round(mcc, 4)}, per epoch {curve}"))
for device in ("cuda", "cpu"):
    try:
        p = json.load(open(os.path.join(out, f"predict_{device}.json")))
        results[f"predict_{device}"] = p
        rows.append((f"predict.py, {p['sentences']} sentences, --device {device}",
                     f"{p['median_wall_s']} s wall (start-up included), peak {p['peak_rss_mib']} MiB"))
    except Exception:
        pass
tp = load("throughput.json")
if tp:
    p = tp["pipelines"]
    results["per_step_batch32"] = p
    for name in ("bare_loop", "csv", "graphs", "lightning_seed"):
        if name in p:
            rows.append((f"per step, MiniLM batch 32: {name}", f"{p[name]['step_ms']:.2f} ms, "
                         f"{p[name]['samples_per_s']:.0f} samples/s"))
    for name in ("csv_bf16", "graphs_bf16"):
        if name in p:
            rows.append((f"per step, MiniLM batch 32: {name}", f"{p[name]['step_ms']:.2f} ms"))
    if "bare_loop" in p:
        for name in ("csv", "graphs"):
            if name in p:
                rows.append((f"  {name} vs bare eager", f"{p[name]['step_ms'] / p['bare_loop']['step_ms']:.3f}x the "
                             f"time ({p['bare_loop']['step_ms'] / p[name]['step_ms']:.2f}x faster)"))
import re

# "step graphs (cuda): 3 shapes captured (32x16, ...) in 0.84 s, 790 steps replayed", printed by train.py
captured = re.findall(r"step graphs \((\w+)\): (\d+) shapes captured \(([^)]*)\) in ([\d.]+) s, (\d+) steps replayed", text)
if captured:
    backend, shapes, names, seconds, replays = captured[0]  # the default run's (graphs3)
    results["capture"] = {"backend": backend, "shapes": int(shapes), "seconds": float(seconds),
                          "replays": int(replays)}
    rows.append(("capture, default run (graphs3)", f"{shapes} shapes ({names}) in {seconds} s, {replays} steps "
                 "replayed (target: <= 2 s)"))
    if tp and "csv" in tp["pipelines"] and "graphs" in tp["pipelines"]:
        saved = (tp["pipelines"]["csv"]["step_ms"] - tp["pipelines"]["graphs"]["step_ms"]) / 1000
        even = float(seconds) / saved if saved > 0 else None
        results["break_even_steps"] = even
        rows.append(("break-even: capture s / (eager - graph step)", "never (graphs are not faster a step)"
                     if even is None else f"{even:.0f} steps (the default run has 804)"))
e, g = results.get("eager_default_run", {}), results.get("graphs_default_run", {})
if isinstance(e.get("mcc_per_epoch"), list) and isinstance(g.get("mcc_per_epoch"), list) and e["mcc_per_epoch"]:
    diff = max(abs(a - b) for a, b in zip(e["mcc_per_epoch"], g["mcc_per_epoch"]))
    results["graphs_mcc_max_epoch_diff"] = diff
    rows.append(("graphs vs eager, largest per-epoch valid/mcc difference", f"{diff:.4f} (target: <= 0.005)"))
ho = load("host_overhead.json")
if ho:
    results["host_overhead"] = ho
    for name, row in ho.items():
        ratio = f", {row['x_bare']:.3f}x bare" if "x_bare" in row else ""
        rows.append((f"host overhead, tiny BERT batch 32: {name}", f"{row['step_ms']:.3f} ms{ratio}"))
for precision in ("32", "bf16"):  # "precision bf16, cuda: 1234 aten calls a step ...", profile_step.py's first line
    found = re.findall(r"^precision \S+, (\w+): (\d+) aten calls a step", open(os.path.join(out, f"profile_{precision}.txt")).read(),
                       re.M) if os.path.isfile(os.path.join(out, f"profile_{precision}.txt")) else []
    if found:
        results[f"aten_calls_per_step_{precision}"] = int(found[0][1])
        rows.append((f"eager step, {precision}: aten calls (profile_{precision}.txt has the top operators)",
                     f"{found[0][1]} on {found[0][0]}"))
for name, s in steps.items():
    rows.append((f"step {name}", f"exit {s['exit']}, {s['seconds']} s"))
json.dump(results, open(os.path.join(out, "results.json"), "w"), indent=1)
table = "| measurement | result |\n|---|---|\n" + "\n".join(f"| {a} | {b} |" for a, b in rows)
open(os.path.join(out, "summary.md"), "w").write(f"device: {results['device']}, torch {results.get('torch')}\n\n"
                                                    + table + "\n")
print(f"device: {results['device']}, torch {results.get('torch')}")
print(table)
PY
echo "=== done in $(( $(date +%s) - START ))s; files in $OUT"
