"""Two "machines" on one host: two torchrun agents with c10d rendezvous (gloo on CPUs), each with its own
--output-dir standing in for a node-local disk. Only the global main process writes; the best checkpoint scores the
same in a one-process evaluate.py; killed and started again with --resume auto, the pair continues from the main
node's last checkpoint and ends as an uninterrupted pair does."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from conftest import ROOT, run_script, save_tiny_model

ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_tokenizer):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-bert"), tiny_tokenizer, seed=3)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_pair(args, outputs, cwd, rdzv_id):
    """Two torchrun agents (nodes), one process each, meeting at a c10d rendezvous on 127.0.0.1."""
    port = _free_port()
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
               "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", rdzv_id,
               str(ROOT / "scripts" / "train.py"), *args]
    return [subprocess.Popen([*command, "--output-dir", str(out)], cwd=cwd, env={**os.environ, **ENV},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
            for out in outputs]


def finish(agents, timeout=240):
    results = [agent.communicate(timeout=timeout) for agent in agents]
    for agent, (out, err) in zip(agents, results):
        assert agent.returncode == 0, err[-4000:]
    return results


def kill_tree(pid: int) -> None:
    """SIGKILL `pid` and every process below it (torchrun's workers run in sessions of their own)."""
    def children(parent):
        found = []
        for task in os.listdir(f"/proc/{parent}/task"):
            try:
                with open(f"/proc/{parent}/task/{task}/children") as f:
                    found += [int(c) for c in f.read().split()]
            except OSError:
                pass
        return found

    stack, tree = [pid], []
    while stack:
        current = stack.pop()
        tree.append(current)
        try:
            stack += children(current)
        except OSError:
            pass
    for member in tree:
        try:
            os.kill(member, signal.SIGKILL)
        except ProcessLookupError:
            pass


def train_args(model_dir, tiny_cola, *extra):
    # 48 rows, batch 4 on each of 2 processes: 6 steps an epoch, 3 epochs; a resumable checkpoint every 2 steps
    return ["--model", str(model_dir), "--data-dir", str(tiny_cola), "--max-epochs", "3", "--batch-size", "4",
            "--patience", "10",
            "--lr", "1e-3", "--log-every-n-steps", "1", "--save-every-n-steps", "2", "--no-progress-bar",
            "--run-name", "pair", *extra]


def main_output(outputs):
    """The output folder the global main process wrote (rendezvous decides which node is rank 0); the other stays
    empty."""
    written = [out for out in outputs if out.exists() and any(out.iterdir())]
    assert len(written) == 1, [sorted(p.name for p in out.rglob("*")) for out in outputs if out.exists()]
    return written[0]


def test_two_nodes_train_only_the_main_one_writes_and_the_best_checkpoint_scores_the_same(tmp_path, model_dir,
                                                                                           tiny_cola):
    outputs = [tmp_path / "node-a", tmp_path / "node-b"]
    (out_a, _), (out_b, _) = finish(start_pair(train_args(model_dir, tiny_cola), outputs, tmp_path, "full"))
    main = main_output(outputs)
    run_dir = main / "pair"
    assert yaml.safe_load((run_dir / "status.yaml").read_text())["status"] == "finished"
    hparams = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    assert hparams["num_processes"] == 2 and hparams["global_batch_size"] == 8
    frame = pd.read_csv(run_dir / "metrics.csv")
    assert frame.dropna(subset=["train/loss_step"])["step"].tolist() == list(range(1, 19))
    assert [line for line in (out_a + out_b).splitlines() if line.startswith("{")].__len__() == 1  # one JSON line

    # the best checkpoint, validated by one process, gives the metrics the two-node run logged at its step
    summary = yaml.safe_load((run_dir / "summary.yaml").read_text())
    best = frame[frame["step"] == summary["checkpoint/step"]].dropna(subset=["valid/acc"]).iloc[-1]
    result = run_script("evaluate.py", "--checkpoint", str(run_dir / "checkpoints" / "best"), "--data-dir",
                        str(tiny_cola), "--output-dir", str(tmp_path / "eval"), cwd=tmp_path, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    for name in ("valid/acc", "valid/mcc", "valid/f1", "valid/precision_macro", "valid/recall_macro",
                 "valid/loss_epoch"):
        assert scores[name] == pytest.approx(best[name], abs=1e-6), name

    # killed after a checkpoint and started again with --resume auto: continues, and ends as the uninterrupted pair
    cut = [tmp_path / "cut-a", tmp_path / "cut-b"]
    agents = start_pair(train_args(model_dir, tiny_cola), cut, tmp_path, "cut")
    try:
        deadline = time.monotonic() + 240
        while not any((out / "pair" / "checkpoints" / "last" / "trainer_state.pt").is_file() for out in cut):
            assert all(a.poll() is None for a in agents) and time.monotonic() < deadline, \
                [a.communicate()[1][-2000:] for a in agents]
            time.sleep(0.02)
    finally:
        for agent in agents:
            kill_tree(agent.pid)  # the agent and its worker process: a machine lost, or a job killed
            agent.wait()
    killed = main_output(cut) / "pair"
    assert yaml.safe_load((killed / "status.yaml").read_text())["status"] == "running"  # a dead writer's record
    (out_a, _), (out_b, _) = finish(start_pair(train_args(model_dir, tiny_cola, "--resume", "auto"), cut, tmp_path,
                                               "again"))
    assert "resuming from" in out_a + out_b and main_output(cut) == killed.parent  # the same node is main again
    resumed = pd.read_csv(killed / "metrics.csv")
    pd.testing.assert_frame_equal(resumed, frame, check_exact=True)
    name = "checkpoints/best/model.safetensors"
    assert (killed / name).read_bytes() == (run_dir / name).read_bytes()
