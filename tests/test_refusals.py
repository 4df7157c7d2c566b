"""What a user's mistakes and interruptions cost: one stderr line and exit 2 (130 for Ctrl-C), never a traceback,
nothing half-written; and what every run folder holds whatever the loggers."""
import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from conftest import assert_one_line_error as one_line_error, ROOT, run_script, tiny_bert, tiny_rows, write_tsv

ENV = {"HF_HUB_OFFLINE": "1"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_cola, tiny_tokenizer):
    """A finished run with only `--logger tensorboard` chosen: (work folder, model folder, run folder)."""
    work = tmp_path_factory.mktemp("refusals")
    tiny_bert(tiny_tokenizer).save_pretrained(work / "model")
    tiny_tokenizer.save_pretrained(work / "model")
    result = run_script("train.py", "--model", str(work / "model"), "--data-dir", str(tiny_cola), "--max-epochs",
                        "1", "--batch-size", "8", "--no-progress-bar", "--run-name", "tb", "--logger", "tensorboard",
                        cwd=work, env=ENV)
    assert result.returncode == 0, result.stderr[-3000:]
    return work, work / "model", work / "runs" / "tb", result


def test_every_run_folder_holds_the_local_record_and_says_where_it_is_first(trained, tiny_cola):
    work, model, run, result = trained
    assert result.stdout.splitlines()[0] == f"run folder: {run}"  # printed before anything is loaded
    for name in ("hparams.yaml", "metrics.csv", "summary.yaml", "report.html", "status.yaml"):
        assert (run / name).is_file(), name
    assert list((run / "tensorboard").iterdir())  # the chosen logger on top
    assert run_script("report.py", str(run), "-o", str(work / "r.html"), cwd=work).returncode == 0
    assert (work / "r.html").is_file()
    evaluated = run_script("evaluate.py", "--checkpoint", str(run / "checkpoints" / "best"), "--data-dir",
                           str(tiny_cola), "--run-name", "ev", "--logger", "none", cwd=work, env=ENV)
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert evaluated.stdout.splitlines()[0] == f"run folder: {work / 'runs' / 'ev'}"
    assert (work / "runs" / "ev" / "report.html").is_file() and (work / "runs" / "ev" / "metrics.csv").is_file()
    metrics = json.loads(evaluated.stdout.strip().splitlines()[-1])
    assert metrics["valid/acc"] == pytest.approx(pd.read_csv(work / "runs" / "ev" / "metrics.csv")["valid/acc"].iloc[-1])


def ctrl_c_as_from_a_shell():
    """In the child before exec: SIGINT handled by default and not blocked, as a shell starts a program. A library
    in the pytest worker may have left SIGINT ignored or blocked (ignored and blocked signals pass to children), and
    the child would then train on through Ctrl-C (seen once in CI: no output, a 120 s time-out)."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_exits_130_naming_the_step_and_the_resume_command(tmp_path, trained, tiny_cola):
    _, model, _, _ = trained
    args = ["--model", str(model), "--data-dir", str(tiny_cola), "--max-epochs", "500", "--patience", "100000",
            "--batch-size", "8", "--no-progress-bar", "--save-every-n-steps", "2", "--log-every-n-steps", "1",
            "--run-name", "c"]
    process = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "train.py"), *args], cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, **ENV},
                               preexec_fn=ctrl_c_as_from_a_shell)
    state = tmp_path / "runs" / "c" / "checkpoints" / "last" / "trainer_state.pt"
    deadline = time.monotonic() + 120
    while not state.is_file():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    (line,) = [line for line in err.splitlines() if line.startswith("interrupted")]
    status = yaml.safe_load((tmp_path / "runs" / "c" / "status.yaml").read_text())
    assert status["status"] == "interrupted" and f"at step {status['step']}," in line
    assert f"--resume {tmp_path / 'runs' / 'c'}" in line
    rows = pd.read_csv(tmp_path / "runs" / "c" / "metrics.csv")  # the CSV logger was finalized: every row readable
    assert rows["step"].max() <= status["step"]
    command = line.split("with: ", 1)[1].split()
    assert command[:2] == ["python", "scripts/train.py"]
    again = run_script("train.py", *command[2:], "--max-epochs", "1", cwd=tmp_path, env=ENV)
    # --max-epochs may change on resume; the run goes on from the checkpoint and finishes
    assert again.returncode == 0 and "resuming from" in again.stdout, again.stderr[-3000:]


def test_hub_offline_without_a_cached_dataset_is_the_same_one_line(tmp_path, trained):
    _, model, _, _ = trained
    result = run_script("train.py", "--model", str(model), "--task", "cola", cwd=tmp_path, env=ENV)
    one_line_error(result, "cannot load nyu-mll/glue/cola", "--data-dir")
    assert not (tmp_path / "runs").exists()


def test_data_is_checked_before_the_model_is_loaded(tmp_path, trained):
    _, model, _, _ = trained
    data = tmp_path / "huge"
    data.mkdir()
    write_tsv(data / "train.tsv", tiny_rows(10, seed=1))
    (data / "dev.tsv").write_text("gj04\t1\t\tFine.\ngj04\t1\t\t" + "x" * 200_000 + "\n")  # over csv's field limit
    result = run_script("train.py", "--model", str(model), "--data-dir", str(data), "--logger", "wandb", cwd=tmp_path,
                        env=ENV)
    one_line_error(result, "dev.tsv:2", "field larger than field limit")
    assert "classification head" not in result.stderr and "LOAD REPORT" not in result.stderr  # no model was loaded
    assert not (tmp_path / "runs").exists()


def test_the_fresh_head_is_reported_in_one_line_not_a_load_table(tmp_path, trained, tiny_cola):
    work, model, _, _ = trained
    encoder = tmp_path / "encoder"  # the tiny BERT without its head: what a pretrained encoder looks like
    from safetensors.torch import load_file, save_file

    shutil.copytree(model, encoder)
    weights = load_file(encoder / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("classifier.")}, encoder / "model.safetensors")
    result = run_script("train.py", "--model", str(encoder), "--data-dir", str(tiny_cola), "--max-steps", "1",
                        "--batch-size", "8", "--no-progress-bar", "--run-name", "head", cwd=tmp_path, env=ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "LOAD REPORT" not in result.stderr and "MISSING" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "classification head" in line]
    assert "classifier.bias, classifier.weight" in line


@pytest.mark.parametrize("damage, fragment", [
    (lambda f: (f / "model.safetensors").write_bytes((f / "model.safetensors").read_bytes()[:1000]), "cannot load"),
    (lambda f: (f / "model.safetensors").write_bytes(b""), "cannot load"),
    (lambda f: (f / "tokenizer.json").write_text("{ not json"), "cannot load"),
    (lambda f: (f / "config.json").write_text(
        (f / "config.json").read_text().replace('"hidden_size": 16', '"hidden_size": 32')), "cannot load"),
])
def test_damaged_checkpoints_are_one_line_for_evaluate_and_predict(tmp_path, trained, tiny_cola, damage, fragment):
    _, _, run, _ = trained
    broken = tmp_path / "broken"
    shutil.copytree(run / "checkpoints" / "best", broken)
    damage(broken)
    for script, extra in (("evaluate.py", ["--data-dir", str(tiny_cola)]), ("predict.py", ["A sentence."])):
        result = run_script(script, "--checkpoint", str(broken), *extra, cwd=tmp_path, env=ENV)
        one_line_error(result, fragment, str(broken))
    assert not (tmp_path / "runs").exists()


def test_predict_reads_files_and_stdin_replaces_bad_utf8_and_keeps_the_order(tmp_path, trained):
    _, _, run, _ = trained
    checkpoint = str(run / "checkpoints" / "best")
    sentences = [s for _, s in tiny_rows(150, seed=5)]
    (tmp_path / "in.txt").write_text("\n".join(sentences[:75]) + "\n\n" + "\n".join(sentences[75:]) + "\n")
    from_file = run_script("predict.py", "--checkpoint", checkpoint, "--input", str(tmp_path / "in.txt"),
                           "--batch-size", "7", cwd=tmp_path)
    assert from_file.returncode == 0, from_file.stderr[-2000:]
    lines = [json.loads(line) for line in from_file.stdout.splitlines()]
    assert [line["sentence"] for line in lines] == sentences  # input order, the blank line skipped

    from models import Predictor  # one unbatched pass of the same model gives the same scores

    expected = Predictor(checkpoint).predict(sentences[:5], batch_size=1)
    for line, scores in zip(lines, expected):
        assert [line["scores"][s["label"]] for s in scores] == pytest.approx([s["score"] for s in scores], abs=1e-4)

    piped = run_script("predict.py", "--checkpoint", checkpoint, "--input", "-", cwd=tmp_path,
                       input=(tmp_path / "in.txt").read_bytes())
    assert piped.returncode == 0 and piped.stdout == from_file.stdout

    bad = subprocess.run([sys.executable, str(ROOT / "scripts" / "predict.py"), "--checkpoint", checkpoint,
                          b"The cat \xff saw him."], capture_output=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 0, bad.stderr[-2000:]
    assert json.loads(bad.stdout)["sentence"] == "The cat \ufffd saw him."
    assert b"not UTF-8" in bad.stderr and b"Traceback" not in bad.stderr


@pytest.mark.parametrize("args, fragment", [
    (["--seed", "-1"], "--seed: expected an integer in [0, 4294967295], got '-1'"),
    (["--seed", str(2**32)], "--seed: expected an integer in [0, 4294967295]"),
    (["--warmup-ratio", "nan"], "--warmup-ratio: expected a number in [0, 1], got 'nan'"),
    (["--warmup-ratio", "1.5"], "--warmup-ratio: expected a number in [0, 1]"),
    (["--weight-decay", "-0.1"], "--weight-decay: expected a finite number >= 0"),
    (["--weight-decay", "nan"], "--weight-decay: expected a finite number >= 0"),
    (["--monitor", "valid/nope"], "--monitor 'valid/nope' is not a metric this model logs"),
    (["--logger-timeout", "0"], "--logger-timeout: expected a positive number"),
])
def test_bad_flags_are_refused_before_anything_is_loaded(tmp_path, tiny_cola, args, fragment, capsys, monkeypatch):
    from recipes import cli, train

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:  # argparse exits; checks after parsing return 2
        sys.exit(cli.run_main(train.main, ["--data-dir", str(tiny_cola), *args]))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("error:") == 1 and fragment in err, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("variable, name", [("ACCELERATE_USE_FSDP", "FSDP"), ("ACCELERATE_USE_DEEPSPEED", "DeepSpeed")])
def test_fsdp_and_deepspeed_are_refused_until_their_checkpoints_are_tested(tmp_path, tiny_cola, variable, name):
    """What `accelerate launch` sets when `accelerate config` chose FSDP or DeepSpeed: refused in one line before
    anything is written (the trainer's checkpoint of a sharded model could not be resumed)."""
    result = run_script("train.py", "--data-dir", str(tiny_cola), cwd=tmp_path, env={**ENV, variable: "true"})
    one_line_error(result, f"{name} ({variable}) is not supported yet", "DDP")
    assert not (tmp_path / "runs").exists()


def test_accelerate_launch_on_cpus_across_machines_without_mpi_is_refused(tmp_path, tiny_cola):
    """`accelerate launch --cpu --num_machines 2` without --mpirun_hostfile starts each machine's process alone (it
    sets MASTER_ADDR, not WORLD_SIZE): each would train a separate run; refused, pointing to torchrun."""
    env = {**ENV, "ACCELERATE_USE_CPU": "True", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    result = run_script("train.py", "--data-dir", str(tiny_cola), cwd=tmp_path, env=env)
    one_line_error(result, "accelerate launch started this process alone on CPUs", "torchrun --nnodes")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("content, fragment", [
    ("log_model: 'false'\n", "log_model: 'false' is not a boolean; write true or false"),
    ("deterministic: 0\n", "deterministic: 0 is not a boolean"),
    ("lr: 0.1\nbatch_size: 8\nlr: 0.2\n", "line 3: lr is given a second time; keep one"),
])
def test_a_config_file_means_what_it_says_or_is_refused(tmp_path, tiny_cola, content, fragment):
    """A switch is a YAML boolean (the string 'false' once turned it on), and a key given twice is refused (YAML
    keeps the last value without a word)."""
    (tmp_path / "c.yaml").write_text(content)
    result = run_script("train.py", "--config", str(tmp_path / "c.yaml"), "--data-dir", str(tiny_cola),
                        cwd=tmp_path, env=ENV)
    one_line_error(result, f"--config {tmp_path / 'c.yaml'}", fragment)
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 300 KB tmpfs, for a run folder that fills it (mounting needs root: .ci/run is)."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    yield folder
    subprocess.run(["umount", str(folder)], capture_output=True)


def test_a_full_disk_is_one_line_leaves_no_temporary_file_and_keeps_every_row_whole(tmp_path, trained, tiny_cola,
                                                                                       small_disk):
    """The run folder's disk fills up while a checkpoint is written: one error line naming the last good checkpoints,
    exit code 1, no half-written folder or file (best.tmp, last.tmp, report.html.tmp), status `failed`, and a
    metrics.csv whose rows are all whole."""
    _, model, _, _ = trained
    result = run_script("train.py", "--model", str(model), "--data-dir", str(tiny_cola),
                        "--output-dir", str(small_disk), "--run-name", "r", "--max-epochs", "20", "--batch-size", "8",
                        "--patience", "100", "--save-every-n-steps", "2", "--no-progress-bar", cwd=tmp_path, env=ENV)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "error:" in line]
    assert line.startswith("error: the disk is full:") and "No space left on device" in line
    assert "the last good checkpoint" in line and "--output-dir on another disk" in line
    run = small_disk / "r"
    assert [p.name for p in run.rglob("*") if ".tmp" in p.name] == []
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert len(rows) >= 3 and {len(row) for row in rows} == {len(rows[0])}  # no row cut short
    status = yaml.safe_load((run / "status.yaml").read_text())
    assert status["status"] == "failed"
