"""The benchmark scripts: their arithmetic checked by hand, and one short end-to-end run of all three pipelines (on a
tiny random BERT: the same code, without all-MiniLM-L6-v2's seconds a step)."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, SHIPPED_COLA, save_tiny_model, tiny_bert

sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import StepClock, train_flops  # noqa: E402
from throughput import summarize  # noqa: E402


def test_step_clock_counts_samples_after_the_warm_up_steps():
    clock = StepClock(spawn_time=100.0)
    for t, shape in [(103.0, (16, 10)), (103.5, (16, 20)), (104.5, (8, 30))]:
        clock.step_done(torch.zeros(shape, dtype=torch.long))
        clock.times[-1] = t
    result = clock.result("x", warmup=1)
    assert result["first_step_s"] == 3.0
    assert result["samples_per_s"] == pytest.approx((16 + 8) / 1.5)
    assert result["step_s"] == pytest.approx(0.75)
    assert result["padded_tokens_per_step"] == pytest.approx((16 * 20 + 8 * 30) / 2)


def test_summary_takes_medians_and_ratios():
    def run(samples, flops=1e9, timed=1.0):
        return {"samples_per_s": samples, "step_s": 16 / samples, "first_step_s": 2.0, "peak_rss_mib": 100.0,
                "padded_tokens_per_step": 10.0, "flops": flops, "timed_s": timed}

    peaks = [{"float32": 4e9, "bfloat16": 8e9, "threads": 2}, {"float32": 2e9, "bfloat16": 8e9, "threads": 2},
             {"float32": 3e9, "bfloat16": 8e9, "threads": 2}]
    summary = summarize({"ours": [run(90), run(120), run(100)], "lightning_seed": [run(10), run(12), run(11)],
                         "bare_loop": [run(50), run(45), run(55)]}, peaks)
    ours = summary["pipelines"]["ours"]
    assert ours["samples_per_s"] == 100 and ours["x_lightning_seed"] == pytest.approx(100 / 11)
    assert ours["x_bare_loop"] == pytest.approx(2.0)
    assert summary["matmul_gflop_per_s"]["float32"] == 3.0 and ours["of_matmul_peak"] == pytest.approx(1 / 3)


def test_flop_count_matches_the_transformer_formula(tiny_tokenizer):
    """Forward + backward = 3 x forward; forward = 2 x (weights x tokens) for the linear layers, plus attention's two
    products per layer (2 x 2 x batch x length^2 x hidden)."""
    model = tiny_bert(tiny_tokenizer)
    cfg = model.config
    h, inter, layers, batch, length = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, 4, 7
    tokens = batch * length
    linear_macs = layers * (4 * h * h + 2 * h * inter) * tokens + (h * h + h * 2) * batch  # + pooler, classifier
    attention_macs = layers * 2 * batch * length * length * h  # scores (Q K^T) and weighted values, per layer
    expected = 3 * 2 * (linear_macs + attention_macs)  # 2 FLOPs a multiply-add; backward twice the forward
    counted = train_flops(model, [(batch, length)])
    assert counted == expected
    assert train_flops(model, [(batch, length)] * 3) == 3 * counted


def test_throughput_runs_all_three_pipelines(tmp_path, tiny_tokenizer):
    pytest.importorskip("lightning", reason="the bench extra (pip install -e '.[bench]') is not installed")
    model = save_tiny_model(tmp_path / "model", tiny_tokenizer, max_positions=128)  # the seed pads to 128
    out, cola = tmp_path / "bench.json", tmp_path / "cola"  # the first 256 and 64 rows: the same code, less waiting
    cola.mkdir()
    for name, rows in (("train.tsv", 256), ("dev.tsv", 64)):
        lines = (SHIPPED_COLA / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (cola / name).write_text("".join(lines[:rows]), encoding="utf-8")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--data-dir", str(cola),
                             "--steps", "3", "--warmup", "1", "--repeats", "1", "--json", str(out)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TMPDIR": str(tmp_path), "MINILM_DIR": str(model)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads(out.read_text())
    for name in ("ours", "lightning_seed", "bare_loop"):
        run = data["runs"][name][0]
        assert run["steps"] == 3 and len(run["timed_shapes"]) == 2
        widths = {length for _, length in run["timed_shapes"]}
        assert widths == {128} if name == "lightning_seed" else max(widths) < 128  # padded to 128, or per batch
        assert run["samples_per_s"] > 0 and run["flops"] > 0 and run["first_step_s"] > 0
    assert 0 < data["runs"]["ours"][0]["validation_s"] < 60
    assert "x_lightning_seed" in result.stdout and "large matmul" in result.stdout


def test_host_sync_check_needs_a_gpu_and_says_so(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the check would run for real")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "host_syncs.py")], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stderr.strip() == "error: no CUDA device; this check needs a GPU"


def test_step_graph_ops_and_profile_step_run_and_report(tmp_path, tiny_tokenizer, tiny_cola):
    """The two scripts issue #24's figures come from, on a tiny BERT: what a captured step holds, and a profile."""
    model = save_tiny_model(tmp_path / "model", tiny_tokenizer)
    env = {**os.environ, "TMPDIR": str(tmp_path), "MINILM_DIR": str(model)}
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "step_graph_ops.py"), "--data-dir",
                             str(tiny_cola), "--steps", "8", "--batch-size", "5"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(result.stdout)
    trace = data["trace"]
    assert trace["captures"] and all(shape[0] == 5 for shape in trace["captures"])
    assert len(trace["ops_per_step"]) == len(trace["captures"]) and min(trace["ops_per_step"]) > 100
    assert 0 < trace["replays"] < 8 and trace["replay_step_ms"] > 0 and data["eager"]["eager_step_ms"] > 0
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "profile_step.py"), "--data-dir",
                             str(tiny_cola), "--warmup", "2", "--steps", "2", "--rows", "5"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    first = next(line for line in result.stdout.splitlines() if line.startswith("precision "))
    calls = int(first.split(": ")[1].split()[0])
    assert first.startswith("precision 32, cpu: ") and calls > 100 and "aten::" in result.stdout
