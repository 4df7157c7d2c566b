"""Run folders are never lost: a resume refuses what would overwrite or mix a run, one writer holds a folder at a
time (and a killed one never leaves it stuck), and the refusals are one line that changes no file."""
import hashlib
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from conftest import assert_one_line_error as one_line_error, ROOT, run_script

ENV = {"HF_HUB_OFFLINE": "1"}


def flags(model_dir, data_dir, *extra):
    return ["--model", str(model_dir), "--data-dir", str(data_dir), "--batch-size", "8", "--no-progress-bar",
            "--log-every-n-steps", "2", "--patience", "100000", *extra]


def fingerprint(folder):
    """Every file under `folder` with the SHA-256 of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def start(cwd, *args):
    return subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **ENV})


def wait_for(predicate, process, timeout=120):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def killed_run(tmp_path_factory, tiny_cola, tiny_tokenizer):
    """A run killed with SIGKILL after its first resumable checkpoint and a few metrics rows: (folder, its flags)."""
    from conftest import tiny_bert

    work = tmp_path_factory.mktemp("killed")
    tiny_bert(tiny_tokenizer).save_pretrained(work / "model")
    tiny_tokenizer.save_pretrained(work / "model")
    args = flags(work / "model", tiny_cola, "--max-epochs", "500", "--save-every-n-steps", "2", "--run-name", "cut")
    process = start(work, *args)
    run = work / "runs" / "cut"
    wait_for(lambda: (run / "checkpoints" / "last" / "trainer_state.pt").is_file() and
             len((run / "metrics.csv").read_text().splitlines()) > 3, process)
    process.kill()
    process.wait()
    return run, args


def copy_of(killed_run, tmp_path):
    import shutil

    run, args = killed_run
    shutil.copytree(run, tmp_path / "runs" / "cut")
    return tmp_path / "runs" / "cut", args


def test_a_finished_run_is_never_resumed_over(tmp_path, tiny_cola, tiny_model_dir):
    args = flags(tiny_model_dir, tiny_cola, "--max-epochs", "1", "--run-name", "done", "--save-every-n-steps", "2")
    assert run_script("train.py", *args, cwd=tmp_path, env=ENV).returncode == 0
    run = tmp_path / "runs" / "done"
    assert yaml.safe_load((run / "status.yaml").read_text())["status"] == "finished"
    before = fingerprint(run)
    for resume in (["--resume", "auto"], ["--resume", str(run)], ["--resume", str(run / "checkpoints" / "last")]):
        one_line_error(run_script("train.py", *args, *resume, cwd=tmp_path, env=ENV), "finished at step 6",
                       "another --run-name")
    assert fingerprint(run) == before


def test_a_run_with_results_but_no_checkpoint_is_refused_not_started_over(tmp_path, killed_run):
    import shutil

    run, args = copy_of(killed_run, tmp_path)
    shutil.rmtree(run / "checkpoints")  # killed before its first checkpoint
    before = fingerprint(run)
    result = run_script("train.py", *args, "--resume", "auto", cwd=tmp_path, env=ENV)
    one_line_error(result, "holds metrics.csv", "no resumable checkpoint", "nothing is overwritten")
    assert fingerprint(run) == before


def test_a_second_writer_is_refused_by_name_and_a_killed_one_leaves_no_stale_lock(tmp_path, tiny_cola,
                                                                                   tiny_model_dir):
    args = flags(tiny_model_dir, tiny_cola, "--max-epochs", "500", "--run-name", "held", "--save-every-n-steps", "2")
    first = start(tmp_path, *args)
    last = tmp_path / "runs" / "held" / "checkpoints" / "last"
    wait_for(lambda: (last / "trainer_state.pt").is_file(), first)
    for second in (["--resume", "auto"], ["--resume", str(tmp_path / "runs" / "held")]):
        result = run_script("train.py", *args, *second, cwd=tmp_path, env=ENV)
        one_line_error(result, "is being written by", f"pid {first.pid}", "train.py")
    assert first.poll() is None  # the first writer was not disturbed
    first.send_signal(signal.SIGKILL)
    first.wait()
    # After a kill -9 the lock is gone with the process: the same resume is now taken. --max-epochs may change.
    import torch

    epoch = torch.load(last / "trainer_state.pt", weights_only=True)["epoch"]
    resumed = run_script("train.py", *args[:-4], "--save-every-n-steps", "2", "--max-epochs", str(epoch + 1),
                         "--run-name", "held", "--resume", "auto", cwd=tmp_path, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout
    status = yaml.safe_load((tmp_path / "runs" / "held" / "status.yaml").read_text())
    assert status["status"] == "finished" and status["pid"] != first.pid and status["step"] > 0


def test_two_resumes_at_once_one_wins_the_other_is_refused(tmp_path, tiny_cola, tiny_model_dir):
    args = flags(tiny_model_dir, tiny_cola, "--max-epochs", "500", "--run-name", "twin", "--save-every-n-steps", "2")
    first = start(tmp_path, *args)
    last = tmp_path / "runs" / "twin" / "checkpoints" / "last"
    wait_for(lambda: (last / "trainer_state.pt").is_file(), first)
    first.kill()
    first.wait()
    both = [start(tmp_path, *args, "--resume", "auto") for _ in range(2)]
    time.sleep(1)
    outcomes = []
    for process in both:
        try:
            out, err = process.communicate(timeout=40)
            outcomes.append((process.returncode, err))
        except subprocess.TimeoutExpired:
            outcomes.append((None, ""))  # still training: the winner
            process.kill()
            process.wait()
    refused = [err for code, err in outcomes if code == 2]
    assert len(refused) == 1 and "is being written by" in refused[0] and "Traceback" not in refused[0], outcomes
    assert [code for code, _ in outcomes].count(None) == 1, outcomes


def test_resuming_with_other_flags_is_refused_listing_them(tmp_path, killed_run):
    run, args = copy_of(killed_run, tmp_path)
    before = fingerprint(run)
    changed = [a if a != "8" else "4" for a in args] + ["--lr", "1e-3", "--resume", "auto"]
    result = run_script("train.py", *changed, cwd=tmp_path, env=ENV)
    one_line_error(result, "--batch-size 8 -> 4", "--lr 3e-05 -> 0.001")
    assert fingerprint(run) == before


def test_killed_before_the_first_row_then_resumed_keeps_the_csv_record(tmp_path, tiny_cola, tiny_model_dir):
    """The checkpoint at step 1 comes before any metrics row (rows every 50 steps, epochs of 6 steps)."""
    from accelerate.state import AcceleratorState, GradientState

    from recipes import train
    from trainer import Callback

    class Crash(Exception):
        pass

    class CrashAt(Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if trainer.global_step == 2:
                raise Crash

    def main(name, *extra, callbacks=()):
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
        return train.main(["--model", str(tiny_model_dir), "--data-dir", str(tiny_cola), "--batch-size", "8",
                           "--no-progress-bar", "--max-epochs", "2", "--log-every-n-steps", "50",
                           "--save-every-n-steps", "1", "--output-dir", str(tmp_path), "--run-name", name, *extra],
                          callbacks=callbacks)

    assert main("whole") == 0
    with pytest.raises(Crash):
        main("cut", callbacks=[CrashAt()])
    assert not (tmp_path / "cut" / "metrics.csv").exists()
    assert main("cut", "--resume", "auto") == 0
    whole, cut = pd.read_csv(tmp_path / "whole" / "metrics.csv"), pd.read_csv(tmp_path / "cut" / "metrics.csv")
    pd.testing.assert_frame_equal(cut, whole)
    assert (tmp_path / "cut" / "report.html").is_file() and (tmp_path / "cut" / "summary.yaml").is_file()


@pytest.mark.parametrize("name, damage", [
    ("model.safetensors", lambda data: data[: len(data) // 2]),  # truncated
    ("model.safetensors", lambda data: b"\xff" * 8 + data[8:]),  # a damaged header
    ("trainer_state.pt", lambda data: b""),  # empty
])
def test_a_damaged_resumable_checkpoint_is_one_line_and_changes_nothing(tmp_path, killed_run, name, damage):
    run, args = copy_of(killed_run, tmp_path)
    target = run / "checkpoints" / "last" / name
    target.write_bytes(damage(target.read_bytes()))
    before = fingerprint(run)
    result = run_script("train.py", *args, "--resume", "auto", cwd=tmp_path, env=ENV)
    one_line_error(result, "cannot resume", "damaged")
    assert fingerprint(run) == before


def test_a_checkpoint_of_another_shape_is_refused_before_training(tmp_path, killed_run):
    import torch
    from safetensors.torch import load_file, save_file

    run, args = copy_of(killed_run, tmp_path)
    weights = run / "checkpoints" / "last" / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.classifier.weight"] = torch.zeros(3, tensors["model.classifier.weight"].shape[1])
    save_file(tensors, weights)
    before = fingerprint(run)
    result = run_script("train.py", *args, "--resume", "auto", cwd=tmp_path, env=ENV)
    one_line_error(result, "cannot resume", "model.classifier.weight is (3, 16), the model's (2, 16)")
    assert fingerprint(run) == before


@pytest.mark.parametrize("output_dir, run_name, fragment", [
    ("a-file", "x", "a-file is a file, not a folder"),
    ("a-file/below", "x", "a-file is a file, not a folder"),
    ("runs", "../escape", "must be one plain folder name"),
    ("runs", "a/b", "must be one plain folder name"),
    ("runs", "..", "must be one plain folder name"),
])
def test_bad_output_folders_and_run_names_write_nothing(tmp_path, tiny_cola, tiny_model_dir, output_dir, run_name,
                                                       fragment, capsys, monkeypatch):
    from recipes import cli, train

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("not a folder")
    before = fingerprint(tmp_path)
    code = cli.run_main(train.main, [*flags(tiny_model_dir, tiny_cola), "--output-dir", output_dir, "--run-name",
                                      run_name])
    err = capsys.readouterr().err
    assert code == 2 and err.count("error:") == 1 and fragment in err, err
    assert fingerprint(tmp_path) == before and not (tmp_path / "runs").exists() and not (tmp_path / "escape").exists()


@pytest.mark.parametrize("change, split", [
    (lambda d: (d / "train.tsv").write_text((d / "train.tsv").read_text().replace("\t1\t\t", "\t0\t*\t", 3)),
     "train"),  # labels edited
    (lambda d: (d / "train.tsv").write_text("".join((d / "train.tsv").read_text().splitlines(True)[:12])),
     "train"),  # 48 rows cut to 12
    (lambda d: (d / "dev.tsv").write_text((d / "dev.tsv").read_text().replace("The ", "A ", 1)), "validation"),
])
def test_a_resume_on_other_data_is_refused_naming_the_split(tmp_path, killed_run, tiny_cola, change, split):
    """kill -9, then the data is edited: --resume auto once went on with the new data (at "batch 6 of a 2-batch
    epoch"). The run's hparams.yaml records each split's content hash; a resume on other data is one line, and no
    file of the run changes."""
    import shutil

    run, args = copy_of(killed_run, tmp_path)
    data = tmp_path / "data"  # the run as if it had trained on this folder, which is then edited in place
    shutil.copytree(tiny_cola, data)
    hparams = (run / "hparams.yaml").read_text().replace(str(tiny_cola), str(data))
    (run / "hparams.yaml").write_text(hparams)
    change(data)
    before = fingerprint(run)
    args = [a if a != str(tiny_cola) else str(data) for a in args]
    result = run_script("train.py", *args, "--output-dir", str(tmp_path / "runs"), "--resume", "auto", cwd=tmp_path,
                        env=ENV)
    one_line_error(result, f"cannot resume {run}: the data it trained on has changed since ({split}:",
                   "resume with the data the run began with")
    assert fingerprint(run) == before


def test_a_dead_writer_is_told_from_a_live_one(tmp_path, killed_run, tiny_cola):
    """A run killed with SIGKILL leaves status.yaml saying `running`: whoever reads the folder next knows from the
    lock that its writer is gone, and says so (report.py, and a resume)."""
    from trainer.run_folder import describe_status, read_status

    run, args = copy_of(killed_run, tmp_path)
    status = read_status(str(run))
    assert status["status"] == "running" and status["alive"] is False
    assert describe_status(status) == "killed while running (its process is gone)"
    report = run_script("report.py", str(run), cwd=tmp_path, env=ENV)
    assert report.returncode == 0 and f"{run}: killed while running (its process is gone)" in report.stdout
    assert "killed while running" in (run / "report.html").read_text()
    import fcntl

    fd = os.open(run, os.O_RDONLY)  # a live writer holds the lock
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert read_status(str(run))["alive"] is True and describe_status(read_status(str(run))).startswith("running")
    finally:
        os.close(fd)
    resumed = run_script("train.py", *args, "--max-epochs", "1", "--output-dir", str(tmp_path / "runs"), "--resume",
                         "auto", cwd=tmp_path, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "the run was killed while running (its process is gone)" in resumed.stdout
