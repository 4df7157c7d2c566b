"""Resumable checkpoints: an interrupted run continued from its last checkpoint ends exactly like an uninterrupted
one (bit for bit on CPU), and metrics.csv has no duplicated and no missing rows."""
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch

from conftest import ROOT, run_script, tiny_bert
from data import TextClassificationDataModule
from models import SequenceClassifier, MisclassifiedExamples
from tracking import CSVLogger, build_logger
from trainer import BestScores, Callback, EarlyStopping, ModelCheckpoint, Trainer, seed_everything
from trainer.checkpoint import STATE_FILE, load_state


class Crash(Exception):
    pass


class CrashAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise Crash


def run(run_dir, tiny_cola, tokenizer, crash_at=None, resume=False, init_seed=0, logger=None):
    seed_everything(1, deterministic=True)
    model = SequenceClassifier(model=tiny_bert(tokenizer, seed=init_seed), tokenizer=tokenizer, lr=2e-3, dropout=0.1)
    model.model.config.hidden_dropout_prob = 0.1
    dm = TextClassificationDataModule(tokenizer, data_dir=str(tiny_cola), batch_size=5, seed=1).setup()
    callbacks = [ModelCheckpoint(monitor="valid/mcc", mode="max"), EarlyStopping(monitor="valid/loss", patience=5),
                 MisclassifiedExamples(dm.sentences["validation"]), BestScores({"valid/mcc": "max"})]
    if crash_at:
        callbacks.append(CrashAt(crash_at))
    trainer = Trainer(max_epochs=3, log_every_n_steps=3, accumulate_grad_batches=2, save_every_n_steps=2,
                      logger=CSVLogger(str(run_dir)) if logger is None else build_logger(logger, str(run_dir)),
                      default_root_dir=str(run_dir), callbacks=callbacks, enable_progress_bar=False)
    try:
        trainer.fit(model, dm.train_dataloader(), dm.val_dataloader(),
                    ckpt_path=str(run_dir / "checkpoints" / "last") if resume else None)
    finally:
        trainer.logger.finalize()  # the owner of the logger finalizes it (a second finalize does nothing)
    return model, trainer


# 48 rows / batch 5 = 10 batches an epoch, 5 optimizer steps (accumulating 2), checkpoints every 2 steps. The crash
# comes before the step's own checkpoint: at 3 the last one is mid-epoch, at 5 one step back, at 11 it was taken on
# the last batch of epoch 1, before that epoch's end and validation rows (which must not be logged twice).
@pytest.mark.parametrize("crash_at, checkpoint_step", [(3, 2), (5, 4), (11, 10)])
def test_resumed_run_equals_the_uninterrupted_one(tmp_path, tiny_cola, tiny_tokenizer, crash_at, checkpoint_step):
    full, full_trainer = run(tmp_path / "full", tiny_cola, tiny_tokenizer)
    with pytest.raises(Crash):
        run(tmp_path / "cut", tiny_cola, tiny_tokenizer, crash_at=crash_at)
    state = load_state(tmp_path / "cut" / "checkpoints" / "last")
    assert state["global_step"] == checkpoint_step
    resumed, trainer = run(tmp_path / "cut", tiny_cola, tiny_tokenizer, resume=True, init_seed=99)

    assert trainer.global_step == full_trainer.global_step == 15
    for (name, a), (_, b) in zip(full.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "full" / "metrics.csv"),
                                  pd.read_csv(tmp_path / "cut" / "metrics.csv"), check_exact=True)
    for table in ("examples-step15.csv", "Confusion_Matrix-step15.csv"):
        assert (tmp_path / "full" / "tables" / table).read_bytes() == (tmp_path / "cut" / "tables" / table).read_bytes()
    assert (tmp_path / "full" / "summary.yaml").read_text().replace("full", "X") == \
        (tmp_path / "cut" / "summary.yaml").read_text().replace("cut", "X")


@pytest.mark.parametrize("before, after", [("csv", "csv,tensorboard"), ("csv,tensorboard", "csv")])
def test_resuming_with_other_loggers_keeps_metrics_csv_exact(tmp_path, tiny_cola, tiny_tokenizer, before, after):
    """The loggers may change on resume: each backend gets back its own state, found by name, not by position."""
    run(tmp_path / "full", tiny_cola, tiny_tokenizer)
    with pytest.raises(Crash):
        run(tmp_path / "cut", tiny_cola, tiny_tokenizer, crash_at=5, logger=before)
    run(tmp_path / "cut", tiny_cola, tiny_tokenizer, resume=True, logger=after)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "full" / "metrics.csv"),
                                  pd.read_csv(tmp_path / "cut" / "metrics.csv"), check_exact=True)


def test_checkpoint_holds_only_plain_tensors_and_containers(tmp_path, tiny_cola, tiny_tokenizer):
    with pytest.raises(Crash):
        run(tmp_path / "r", tiny_cola, tiny_tokenizer, crash_at=3)
    last = tmp_path / "r" / "checkpoints" / "last"
    assert sorted(os.listdir(last)) == ["model.safetensors", STATE_FILE]
    torch.load(last / STATE_FILE, weights_only=True)  # raises on anything but tensors and plain containers
    assert not (tmp_path / "r" / "checkpoints" / "last.tmp").exists()


def train_command(model_dir, tiny_cola, out, *extra):
    return [sys.executable, str(ROOT / "scripts" / "train.py"), "--model", str(model_dir), "--data-dir",
            str(tiny_cola), "--max-epochs", "6", "--batch-size", "8", "--lr", "1e-3", "--dropout", "0.1",
            "--log-every-n-steps", "1", "--save-every-n-steps", "2", "--output-dir", str(out), "--run-name", "run",
            "--no-progress-bar", "--logger", "csv,wandb", "--wandb-mode", "offline", *extra]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, tiny_cola, tiny_tokenizer):
    """(a tiny model folder, the environment, the folder of a run of `train_command` that nobody interrupted)."""
    work = tmp_path_factory.mktemp("uninterrupted")
    model_dir = work / "model"
    tiny_bert(tiny_tokenizer).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    full = run_script("train.py", *train_command(model_dir, tiny_cola, work / "full")[2:], cwd=work, env=env)
    assert full.returncode == 0, full.stderr[-3000:]
    return model_dir, env, work / "full" / "run"


def test_kill_9_then_resume_auto_finishes_like_an_uninterrupted_run(tmp_path, tiny_cola, uninterrupted):
    model_dir, env, full_run = uninterrupted

    victim = subprocess.Popen(train_command(model_dir, tiny_cola, tmp_path / "cut"), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "cut" / "run" / "checkpoints" / "last" / STATE_FILE
    deadline = time.monotonic() + 240
    while not state.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere after the first checkpoint: mid-step, mid-write or mid-validation
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    killed_at = load_state(state.parent)["global_step"] if state.exists() else 0
    assert killed_at < 36  # 48 rows / batch 8 = 6 steps an epoch, 6 epochs

    resumed = run_script("train.py", *train_command(model_dir, tiny_cola, tmp_path / "cut", "--resume", "auto")[2:],
                         cwd=tmp_path, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout

    for name in ("checkpoints/last/model.safetensors", "checkpoints/best/model.safetensors"):
        assert (full_run / name).read_bytes() == (tmp_path / "cut" / "run" / name).read_bytes(), name
    a = pd.read_csv(full_run / "metrics.csv")
    b = pd.read_csv(tmp_path / "cut" / "run" / "metrics.csv")
    assert len(a) == len(b), f"killed at step {killed_at}; the resumed run said: {resumed.stderr[-3000:]}"
    pd.testing.assert_frame_equal(a, b, check_exact=True)  # no duplicated and no missing rows
    steps = b.dropna(subset=["train/loss_step"])["step"].tolist()
    assert steps == list(range(1, steps[-1] + 1)) and killed_at < steps[-1]
    run_ids = {p.name.rsplit("-", 1)[-1] for p in (tmp_path / "cut" / "run" / "wandb").glob("offline-run-*")}
    assert len(run_ids) == 1  # the W&B run goes on under the same id


def test_resume_flags(tmp_path, tiny_cola):
    from conftest import run_script

    (tmp_path / "empty").mkdir()
    result = run_script("train.py", "--resume", str(tmp_path / "empty"), "--data-dir", str(tiny_cola), cwd=tmp_path)
    assert result.returncode == 2 and "has no resumable checkpoint" in result.stderr
    result = run_script("train.py", "--resume", "auto", "--data-dir", str(tiny_cola), cwd=tmp_path)
    assert result.returncode == 2 and "no unfinished run in runs has a resumable checkpoint" in result.stderr


def test_a_kill_between_the_two_renames_leaves_the_previous_checkpoint_usable(tmp_path):
    from trainer.checkpoint import find_resumable, replace_dir

    last = tmp_path / "run" / "checkpoints" / "last"
    replace_dir(lambda d: torch.save({"global_step": 2}, os.path.join(d, STATE_FILE)), str(last))
    assert find_resumable(str(tmp_path / "run")) == str(last)
    # the state replace_dir passes through: old moved aside, new one not yet renamed in
    os.replace(last, f"{last}.old")
    (tmp_path / "run" / "checkpoints" / "last.tmp").mkdir()
    assert find_resumable(str(tmp_path / "run")) == f"{last}.old"
    assert load_state(f"{last}.old")["global_step"] == 2


def test_sigterm_checkpoints_at_the_next_step_exits_143_and_resumes_exactly(tmp_path, tiny_cola, uninterrupted):
    """A preempted job (SIGTERM, as Slurm, Kubernetes and spot instances send): the run stops at the next step,
    writes a resumable checkpoint of that step, finalizes its trackers, records `interrupted` with the step, says in
    one line how to resume, and exits 143. Resumed, it ends exactly as an uninterrupted run."""
    import yaml

    model_dir, env, full_run = uninterrupted

    # checkpoints every 7 steps: the SIGTERM checkpoint is its own, not a periodic one
    command = [*train_command(model_dir, tiny_cola, tmp_path / "cut"), "--save-every-n-steps", "7"]
    victim = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "cut" / "run" / "metrics.csv"
    deadline = time.monotonic() + 240
    while not (metrics.exists() and len(metrics.read_text().splitlines()) > 3):
        assert victim.poll() is None and time.monotonic() < deadline, victim.communicate()
        time.sleep(0.02)
    victim.send_signal(signal.SIGTERM)
    out, err = victim.communicate(timeout=60)
    assert victim.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("interrupted")]
    status = yaml.safe_load((tmp_path / "cut" / "run" / "status.yaml").read_text())
    state = load_state(tmp_path / "cut" / "run" / "checkpoints" / "last")
    assert status["status"] == "interrupted" and state["global_step"] == status["step"] < 36
    assert line.startswith(f"interrupted (SIGTERM) at step {status['step']},") and "--resume" in line

    resumed = run_script("train.py", *command[2:], "--resume", "auto", cwd=tmp_path, env=env)
    assert resumed.returncode == 0 and "resuming from" in resumed.stdout, resumed.stderr[-3000:]
    a = pd.read_csv(full_run / "metrics.csv")
    b = pd.read_csv(tmp_path / "cut" / "run" / "metrics.csv")
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    name = "checkpoints/best/model.safetensors"
    assert (full_run / name).read_bytes() == (tmp_path / "cut" / "run" / name).read_bytes()
