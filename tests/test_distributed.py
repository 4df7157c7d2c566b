"""Two CPU processes (gloo, started by torchrun as `accelerate launch` would) against one."""
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, run_script, save_tiny_model


GLOO_ABORT = "terminate called without an active exception"


def torchrun(script, *args, cwd, run_dir=None):
    """Two processes under torchrun. gloo's TCP transport now and then aborts a process while connecting (a C++
    std::terminate, pytorch/gloo#514; once in about 25 runs here): such a run is reported and started once more,
    after removing what it left in `run_dir`. Any other failure is the test's to judge."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
               *args]
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=150)
    if result.returncode != 0 and GLOO_ABORT in result.stderr:
        warnings.warn(f"gloo aborted a process ({GLOO_ABORT}); running {Path(script).name} once more")
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
        result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=150)
    return result


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-bert"), tiny_tokenizer, seed=3)


def test_evaluate_gives_the_same_metrics_and_examples_with_one_and_two_processes(tmp_path, model_dir, tiny_cola):
    common = ["--checkpoint", str(model_dir), "--data-dir", str(tiny_cola), "--output-dir", str(tmp_path),
              "--batch-size", "3"]  # 20 dev rows: 7 batches, so the last one is padded across 2 processes
    one = run_script("evaluate.py", *common, "--run-name", "one", cwd=tmp_path)
    two = torchrun(ROOT / "scripts" / "evaluate.py", *common, "--run-name", "two", cwd=tmp_path,
                   run_dir=tmp_path / "two")
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    m1 = json.loads(one.stdout.strip().splitlines()[-1])
    lines = [line for line in two.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # only the main process prints
    m2 = json.loads(lines[0])
    assert m1.keys() == m2.keys()
    for name in m1:
        assert m2[name] == pytest.approx(m1[name], abs=1e-6), name
    t1 = pd.read_csv(tmp_path / "one" / "tables" / "examples-step0.csv")
    t2 = pd.read_csv(tmp_path / "two" / "tables" / "examples-step0.csv")
    pd.testing.assert_frame_equal(t1, t2)  # the whole dev set once: no padding duplicates, none missing
    cm = pd.read_csv(tmp_path / "two" / "tables" / "Confusion_Matrix-step0.csv", index_col=0)
    assert cm.values.sum() == 20


def test_two_processes_make_the_same_optimizer_steps_for_the_same_global_batch(tmp_path, model_dir, tiny_cola):
    common = ["--model", str(model_dir), "--data-dir", str(tiny_cola), "--max-epochs", "2", "--no-progress-bar",
              "--log-every-n-steps", "1", "--output-dir", str(tmp_path)]
    one = run_script("train.py", *common, "--batch-size", "8", "--run-name", "one", cwd=tmp_path,
                     env={"HF_HUB_OFFLINE": "1"})
    two = torchrun(ROOT / "scripts" / "train.py", *common, "--batch-size", "4", "--run-name", "two", cwd=tmp_path,
                   run_dir=tmp_path / "two")
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, two.stderr[-3000:]
    f1, f2 = (pd.read_csv(tmp_path / name / "metrics.csv") for name in ("one", "two"))
    assert f1["step"].max() == f2["step"].max() == 12  # 48 rows / global batch 8 = 6 steps a epoch
    assert f2.dropna(subset=["train/loss_step"])["step"].tolist() == list(range(1, 13))
    assert f2["valid/acc"].count() == 2
    hparams = (tmp_path / "two" / "hparams.yaml").read_text()
    assert "num_processes: 2" in hparams and "global_batch_size: 8" in hparams


def test_each_sample_once_per_epoch_and_the_same_early_stop_on_every_process(tmp_path, model_dir, tiny_cola):
    # 48 rows in batches of 7 make 7 batches: one is halved so that each of the 2 processes gets 4 whole batches
    out = tmp_path / "seen.json"
    result = torchrun(ROOT / "tests" / "dist_check.py", str(model_dir), str(tiny_cola), str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = json.loads(out.read_text())
    assert sorted(r["rank"] for r in ranks) == [0, 1] and [r["steps"] for r in ranks] == [8, 8]
    # early stopping decided the same on both processes, from the same (reduced) validation loss
    assert ranks[0]["decisions"] == ranks[1]["decisions"]
    assert [stop for _, stop in ranks[0]["decisions"]] == [False, True]
    for epoch in (0, 1):
        trained = [i for r in ranks for e, idx in r["seen"] if e == epoch for i in idx]
        assert sorted(trained) == list(range(48)), epoch  # every sample once, no padding repeats
    assert all(len([1 for e, _ in r["seen"] if e == 0]) == 4 for r in ranks)


def test_a_gloo_abort_is_run_once_more_and_reported(tmp_path):
    marker, run_dir = tmp_path / "aborted-once", tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "half-written").write_text("")
    script = tmp_path / "flaky.py"
    script.write_text("import os, pathlib, sys\n"
                      "marker = pathlib.Path(sys.argv[1])\n"
                      "if os.environ['RANK'] == '0' and not marker.exists():\n"
                      "    marker.write_text('')\n"
                      f"    sys.stderr.write({GLOO_ABORT!r} + '\\n'); sys.stderr.flush(); os.abort()\n")
    with pytest.warns(UserWarning, match="gloo aborted a process"):
        result = torchrun(script, str(marker), cwd=tmp_path, run_dir=run_dir)
    assert result.returncode == 0 and marker.exists() and not run_dir.exists()
