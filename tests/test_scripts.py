"""The three scripts as a user runs them: real processes, exit codes, stdout, and the run folder they leave."""
import json
import os
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT, SHIPPED_COLA, run_script, shell_env, write_tsv, tiny_rows

SEED_METRICS = {"train/loss_step", "train/loss_epoch", "train/acc_step", "train/acc_epoch", "valid/loss_epoch",
                "valid/acc", "valid/precision_macro", "valid/recall_macro", "valid/precision_micro",
                "valid/recall_micro", "valid/f1", "valid/mcc"}


@pytest.fixture(scope="module")
def train_run(tmp_path_factory, tiny_cola, model_dir):
    work = tmp_path_factory.mktemp("work")
    result = run_script("train.py", "--model", str(model_dir), "--data-dir", str(tiny_cola), "--max-epochs", "2",
                        "--batch-size", "8", "--lr", "1e-3", "--log-every-n-steps", "2", "--run-name", "tiny",
                        "--no-progress-bar", cwd=work, env={"HF_HUB_OFFLINE": "1"})
    return result, work / "runs" / "tiny"


def test_train_writes_the_run_folder(train_run):
    result, run = train_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"run folder: {run}" in result.stdout and f"report: {run / 'report.html'}" in result.stdout
    best = json.loads(result.stdout.strip().splitlines()[-1])
    frame = pd.read_csv(run / "metrics.csv")
    assert SEED_METRICS <= set(frame.columns)
    assert frame["step"].max() == 12  # 48 rows / batch 8 = 6 steps per epoch, 2 epochs
    row = frame[(frame["step"] == best["step"])].dropna(subset=["valid/mcc"]).iloc[0]
    assert best["best"]["valid/mcc"] == pytest.approx(row["valid/mcc"], abs=1e-4)
    names = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert {"hparams.yaml", "metrics.csv", "checkpoints/best/config.json", "checkpoints/best/model.safetensors",
            "tables/examples-step6.csv", "tables/examples-step12.csv", "plots/Confusion_Matrix-step12.png",
            "plots/roc-step12.png", "plots/pr-step12.png", "summary.yaml", "report.html"} <= names


def test_evaluate_reproduces_the_best_validation(train_run, tiny_cola, tmp_path):
    _, run = train_run
    frame = pd.read_csv(run / "metrics.csv").dropna(subset=["valid/mcc"])
    best_row = frame.loc[frame["valid/mcc"].idxmax()]  # train.py keeps the best valid/mcc by default
    result = run_script("evaluate.py", "--checkpoint", str(run / "checkpoints" / "best"), "--data-dir",
                        str(tiny_cola), "--output-dir", str(tmp_path), "--run-name", "ev", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    for name in ("valid/loss_epoch", "valid/acc", "valid/mcc", "valid/f1", "valid/precision_macro"):
        assert metrics[name] == pytest.approx(best_row[name], abs=1e-6), name
    assert pd.read_csv(tmp_path / "ev" / "metrics.csv")["valid/acc"].iloc[-1] == pytest.approx(metrics["valid/acc"])


def test_predict_prints_one_json_line_per_sentence(train_run, tmp_path):
    _, run = train_run
    result = run_script("predict.py", "--checkpoint", str(run / "checkpoints" / "best"), "The cat saw him.",
                        "Him saw cat the.", "A third one.", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    assert [line["sentence"] for line in lines] == ["The cat saw him.", "Him saw cat the.", "A third one."]
    for line in lines:
        assert list(line["scores"]) == ["unacceptable", "acceptable"]
        assert sum(line["scores"].values()) == pytest.approx(1.0, abs=2e-4)
        assert line["label"] == max(line["scores"], key=line["scores"].get)
        assert line["score"] == line["scores"][line["label"]]


def test_predict_starts_without_the_training_side(train_run, tmp_path):
    """In a fresh python (the forked runner has everything imported already): predict.py never imports torchmetrics,
    pandas, scikit-learn, matplotlib, datasets or the trainer (torchmetrics alone took 5 s of a 13 s start-up), of
    tracking only its file helpers, and prints what the in-process predictor gives."""
    _, run = train_run
    best = str(run / "checkpoints" / "best")
    sentences = ["The cat saw him.", "Him saw cat the.", "A third one."]
    watch = ("import atexit, runpy, sys; atexit.register(lambda: sys.stderr.write('imported: ' + ' '.join(sorted("
             "{m if m.startswith('tracking') else m.split('.')[0] for m in sys.modules}))));"
             f"sys.argv = ['predict.py', '--checkpoint', {best!r}, *{sentences!r}];"
             f"runpy.run_path({str(ROOT / 'scripts' / 'predict.py')!r}, run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", watch], capture_output=True, text=True, cwd=tmp_path,
                            env=shell_env({"HF_HUB_OFFLINE": "1"}), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    imported = set(result.stderr.rsplit("imported: ", 1)[1].split())
    assert "torch" in imported and "transformers" in imported
    assert not imported & {"torchmetrics", "pandas", "sklearn", "matplotlib", "seaborn", "datasets", "trainer"}
    assert {m for m in imported if m.startswith("tracking")} <= {"tracking", "tracking.files"}

    from models import Predictor

    expected = Predictor(best).probabilities(sentences)
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["sentence"] for line in lines] == sentences
    for line, probs in zip(lines, expected):
        assert list(line["scores"].values()) == pytest.approx(probs, abs=1e-4)


def _one_line_error(result, *fragments):
    assert result.returncode == 2, (result.stdout[-2000:], result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    error_lines = [line for line in lines if "error:" in line]
    assert len(error_lines) == 1, lines
    for fragment in fragments:
        assert fragment in error_lines[0], error_lines[0]


def test_bad_data_is_one_line_and_writes_nothing(tmp_path, model_dir):
    data = tmp_path / "bad"
    data.mkdir()
    write_tsv(data / "train.tsv", tiny_rows(10, seed=1))
    (data / "dev.tsv").write_text("gj04\t1\t\tFine.\ngj04\t1\t\tAlso fine.\ngj04\t7\t*\tBad label.\n")
    result = run_script("train.py", "--model", str(model_dir), "--data-dir", str(data), cwd=tmp_path,
                        env={"HF_HUB_OFFLINE": "1"})
    _one_line_error(result, "dev.tsv:3: label must be 0 or 1, found '7'")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args, fragment", [
    (["--batch-size", "0"], "--batch-size: expected a positive integer, got '0'"),
    (["--lr", "-1"], "--lr: expected a positive number"),
    (["--max-epochs", "zero"], "--max-epochs: expected a positive integer"),
    (["--logger", "csv,neptune"], "unknown logger neptune"),
    (["--num-workers", "-1"], "--num-workers: expected an integer >= 0, got '-1'"),
    (["--model", "./no/such/folder"], "model folder './no/such/folder' does not exist"),
])
def test_bad_flags_are_one_line_errors(tmp_path, tiny_cola, args, fragment):
    result = run_script("train.py", "--data-dir", str(tiny_cola), *args, cwd=tmp_path)
    _one_line_error(result, fragment)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("script, args", [("train.py", ["--seed", "-1"]), ("predict.py", ["--help"]),
                                           ("evaluate.py", ["--checkpoint", "nope"])])
def test_run_script_answers_as_a_fresh_python_process(tmp_path, script, args):
    """The tests' forked runner (conftest.run_script) gives the exit code, stdout and stderr of `python script`."""
    import subprocess
    import sys

    from conftest import ROOT

    fresh = subprocess.run([sys.executable, str(ROOT / "scripts" / script), *args], cwd=tmp_path, capture_output=True,
                           text=True, timeout=120)
    forked = run_script(script, *args, cwd=tmp_path)
    assert (forked.returncode, forked.stdout, forked.stderr) == (fresh.returncode, fresh.stdout, fresh.stderr)
    assert fresh.returncode == (0 if args == ["--help"] else 2)


def test_unreachable_hub_fails_fast_and_says_what_to_pass(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # the discard port: connection refused, no traffic leaves the machine
    import subprocess
    import sys

    from conftest import ROOT

    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), "--task", "cola"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60)
    _one_line_error(result, "cannot reach the Hugging Face Hub", "--data-dir")


def test_missing_checkpoint_folder(tmp_path):
    for script in ("evaluate.py", "predict.py"):
        args = ["--checkpoint", str(tmp_path / "nope")] + (["hello"] if script == "predict.py" else [])
        _one_line_error(run_script(script, *args, cwd=tmp_path), "does not exist")


def test_minilm_trains_a_few_steps_on_the_real_cola_files(tmp_path):
    result = run_script("train.py", "--model", "minilm", "--data-dir", str(SHIPPED_COLA), "--max-steps", "3",
                        "--batch-size", "8", "--limit-val-batches", "2", "--log-every-n-steps", "1",
                        "--run-name", "real", "--no-progress-bar", cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    frame = pd.read_csv(tmp_path / "runs" / "real" / "metrics.csv")
    assert frame["train/loss_step"].dropna().count() == 3
    assert frame["train/loss_step"].dropna().between(0.05, 3).all()  # a cross-entropy over 2 classes, not NaN
    assert frame["valid/acc"].dropna().count() == 1
    examples = pd.read_csv(tmp_path / "runs" / "real" / "tables" / "examples-step3.csv")
    dev = pd.read_csv(SHIPPED_COLA / "dev.tsv", sep="\t", header=None, quoting=3)[3].tolist()
    assert set(examples["Sentence"]) <= set(dev)


@pytest.mark.parametrize("script", ["train.py", "evaluate.py", "predict.py"])
def test_help_is_complete(script, tmp_path):
    result = run_script(script, "--help", cwd=tmp_path)
    assert result.returncode == 0
    flags = {"train.py": ["--model", "--data-dir", "--logger", "--max-epochs", "--max-steps", "--limit-train-batches",
                          "--limit-val-batches", "--batch-size", "--lr", "--seed", "--output-dir", "--run-name",
                          "--log-every-n-steps", "--patience", "--wandb-project", "--wandb-mode", "--log-model",
                          "--confusion-matrix", "--max-examples", "--precision", "--accumulate-grad-batches"],
             "evaluate.py": ["--checkpoint", "--data-dir", "--logger"],
             "predict.py": ["--checkpoint", "SENTENCE"]}[script]
    for flag in flags:
        assert flag in result.stdout, flag


def test_a_hub_model_id_offline_is_a_one_line_error(tmp_path, tiny_cola):
    result = run_script("train.py", "--model", "google/bert_uncased_L-2_H-128_A-2", "--data-dir", str(tiny_cola),
                        cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    _one_line_error(result, "cannot load model 'google/bert_uncased_L-2_H-128_A-2'")
    assert not (tmp_path / "runs").exists()


def test_a_pickle_checkpoint_carrying_code_is_refused_and_never_run(tmp_path, model_dir, tiny_cola):
    import shutil

    import torch

    evil = tmp_path / "evil"
    shutil.copytree(model_dir, evil)
    (evil / "model.safetensors").unlink()
    marker = tmp_path / "MARKER"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))  # unpickling this creates the marker file

    torch.save({"bert.embeddings.word_embeddings.weight": Payload()}, evil / "pytorch_model.bin")
    for script, extra in (("evaluate.py", ["--data-dir", str(tiny_cola)]), ("predict.py", ["A sentence."])):
        result = run_script(script, "--checkpoint", str(evil), *extra, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
        _one_line_error(result, "a pickle that carries code")
        assert not marker.exists()


def test_compile_trains_the_same_steps_as_eager(train_run, tiny_cola, model_dir, tmp_path):
    """--compile changes how the forward runs, not what it computes: the same losses to float tolerance. Batches are
    padded to one length (16, not the batch size, which dynamic shapes would specialise on), so inductor compiles
    once for training and once for validation: minutes on a CPU, most of this test's time."""
    args = ["--model", str(model_dir), "--data-dir", str(tiny_cola), "--max-steps", "4", "--batch-size", "8", "--lr",
            "1e-3", "--log-every-n-steps", "1", "--no-progress-bar", "--logger", "csv", "--pad-to-multiple-of", "16"]
    losses = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        result = run_script("train.py", *args, "--run-name", name, *extra, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
        assert result.returncode == 0, result.stderr[-3000:]
        losses[name] = pd.read_csv(tmp_path / "runs" / name / "metrics.csv")["train/loss_step"].dropna().tolist()
    assert len(losses["eager"]) == 4
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-4)


def test_predict_and_evaluate_run_where_the_device_flag_says(train_run, tiny_cola, tmp_path, monkeypatch):
    """--device auto picks a CUDA GPU when there is one (here: none, so the CPU); asking for a GPU that is not there
    is one line, before anything is loaded or written."""
    import torch

    from models.predictor import pick_device

    _, run = train_run
    best = str(run / "checkpoints" / "best")
    assert pick_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device("auto") == "cuda" and pick_device("cuda:1") == "cuda:1" and pick_device("cpu") == "cpu"
    monkeypatch.undo()
    if torch.cuda.is_available():
        return
    auto = run_script("predict.py", "--checkpoint", best, "--device", "auto", "The cat saw him.", cwd=tmp_path)
    cpu = run_script("predict.py", "--checkpoint", best, "--device", "cpu", "The cat saw him.", cwd=tmp_path)
    assert auto.returncode == cpu.returncode == 0 and auto.stdout == cpu.stdout
    _one_line_error(run_script("predict.py", "--checkpoint", best, "--device", "cuda", "x.", cwd=tmp_path),
                    "--device cuda: no CUDA GPU is visible here")
    _one_line_error(run_script("evaluate.py", "--checkpoint", best, "--data-dir", str(tiny_cola), "--device", "cuda",
                               "--output-dir", str(tmp_path / "out"), cwd=tmp_path),
                    "--device cuda: no CUDA GPU is visible here")
    assert not (tmp_path / "out").exists()
