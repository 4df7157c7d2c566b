"""Your own task end to end, as a user runs it: train.py on a 3-class CSV, a binary sentence-pair JSON-lines file and
a save_to_disk folder; evaluate.py and predict.py on the checkpoint; the report in headless Chromium; train.py
--config; and CoLA read as a CSV file training exactly as from its GLUE TSV files."""
import json
import random
import shutil
import subprocess

import datasets
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from sklearn import metrics as skm

from conftest import ROOT, SHIPPED_COLA, run_script, tiny_rows
from test_sources import three_class_rows, write_csv

OFFLINE = {"HF_HUB_OFFLINE": "1"}
QUICK = ["--batch-size", "8", "--lr", "3e-3", "--log-every-n-steps", "2", "--no-progress-bar"]


def ok(result):
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def independent_scores(checkpoint, texts, pairs=None):
    """Class probabilities from transformers alone: the checkpoint's tokenizer and model, no project code."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint).eval()
    enc = tokenizer(texts, pairs, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits.softmax(-1)


@pytest.fixture(scope="module")
def three_class(tmp_path_factory, tiny_tokenizer):
    from conftest import tiny_bert

    work = tmp_path_factory.mktemp("three")
    model = work / "tiny-bert"  # a binary head (num_labels=2): train.py re-sizes it to the data's 3 classes
    tiny_bert(tiny_tokenizer).save_pretrained(model)
    tiny_tokenizer.save_pretrained(model)
    train = write_csv(work / "train.csv", three_class_rows(60, seed=1))
    valid = write_csv(work / "valid.csv", three_class_rows(24, seed=2))
    data = ["--train-file", train, "--validation-file", valid]
    result = ok(run_script("train.py", "--model", str(model), *data, "--max-epochs", "2", *QUICK, "--run-name", "three",
                           cwd=work, env=OFFLINE))
    return work, work / "runs" / "three", data, result


def test_three_classes_from_a_csv_train_with_their_names(three_class):
    work, run, data, result = three_class
    names = ["animal", "person", "thing"]  # sorted string labels
    config = json.loads((run / "checkpoints" / "best" / "config.json").read_text())
    assert config["id2label"] == {"0": "animal", "1": "person", "2": "thing"}
    assert config["label2id"] == {"animal": 0, "person": 1, "thing": 2}
    summary = yaml.safe_load((run / "summary.yaml").read_text())
    assert summary["checkpoint/monitor"] == "valid/acc"  # the default for more than two classes
    hparams = yaml.safe_load((run / "hparams.yaml").read_text())
    assert hparams["monitor"] == "valid/acc" and hparams["data"]["label_names"] == names
    assert hparams["data"]["source"] == "files" and hparams["data"]["text_column"] == "text"
    step = summary["checkpoint/step"]
    counts = pd.read_csv(run / "tables" / f"Confusion_Matrix-step{step}.csv", index_col=0)
    assert list(counts.index) == names and list(counts.columns) == names

    # the metrics of the best validation against scikit-learn on an independent forward pass
    valid = pd.read_csv(data[3])
    probs = independent_scores(run / "checkpoints" / "best", valid["text"].tolist())
    y, p = valid["label"].map(names.index).to_numpy(), probs.argmax(-1).numpy()
    row = pd.read_csv(run / "metrics.csv").dropna(subset=["valid/acc"])
    row = row[row["step"] == step].iloc[0]
    assert row["valid/acc"] == pytest.approx(skm.accuracy_score(y, p), abs=1e-6)
    assert row["valid/mcc"] == pytest.approx(skm.matthews_corrcoef(y, p), abs=1e-6)  # multi-class MCC
    assert row["valid/f1"] == pytest.approx(skm.f1_score(y, p, average="macro", zero_division=0), abs=1e-6)
    assert counts.values.tolist() == skm.confusion_matrix(y, p, labels=[0, 1, 2]).tolist()
    per_class = pd.read_csv(run / "tables" / f"per_class-step{step}.csv")
    assert per_class["class"].tolist() == names
    assert per_class["f1"].tolist() == pytest.approx(skm.f1_score(y, p, average=None, labels=[0, 1, 2],
                                                                   zero_division=0).tolist(), abs=1e-6)
    examples = pd.read_csv(run / "tables" / f"examples-step{step}.csv")
    wrong = np.flatnonzero(y != p)
    assert examples["Sentence"].tolist() == valid["text"].iloc[wrong].tolist()
    assert examples["Label"].tolist() == valid["label"].iloc[wrong].tolist()
    assert examples["Predicted"].tolist() == [names[i] for i in p[wrong]]
    roc = pd.read_csv(run / "tables" / f"roc-step{step}.csv")
    assert sorted(roc["class"].unique()) == names  # one-vs-rest, one curve per class


def test_three_classes_evaluate_and_predict_use_the_checkpoints_names(three_class, tmp_path):
    work, run, data, _ = three_class
    best = run / "checkpoints" / "best"
    metrics = json.loads(ok(run_script("evaluate.py", "--checkpoint", str(best), *data, "--output-dir",
                                       str(tmp_path), "--run-name", "ev", cwd=tmp_path, env=OFFLINE))
                         .stdout.strip().splitlines()[-1])
    step = yaml.safe_load((run / "summary.yaml").read_text())["checkpoint/step"]
    row = pd.read_csv(run / "metrics.csv").dropna(subset=["valid/acc"])
    row = row[row["step"] == step].iloc[0]
    for name in ("valid/acc", "valid/mcc", "valid/f1", "valid/loss_epoch", "valid/f1_micro"):
        assert metrics[name] == pytest.approx(row[name], abs=1e-6), name
    counts = pd.read_csv(tmp_path / "ev" / "tables" / "Confusion_Matrix-step0.csv", index_col=0)
    assert list(counts.index) == ["animal", "person", "thing"]

    texts = ["the cat saw a book.", "john liked the car."]
    result = ok(run_script("predict.py", "--checkpoint", str(best), *texts, cwd=tmp_path, env=OFFLINE))
    lines = [json.loads(line) for line in result.stdout.strip().splitlines()]
    probs = independent_scores(best, texts)
    assert [list(line["scores"]) for line in lines] == [["animal", "person", "thing"]] * 2
    assert [line["sentence"] for line in lines] == texts
    np.testing.assert_allclose([list(line["scores"].values()) for line in lines], probs.numpy(), atol=1e-4)
    assert [line["label"] for line in lines] == [["animal", "person", "thing"][i] for i in probs.argmax(-1).tolist()]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def test_three_class_report_in_headless_chromium(three_class, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    assert CHROMIUM and DRIVER, "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
    _, run, _, result = three_class
    path = run / "report.html"
    assert f"report: {path}" in result.stdout
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        driver.get(f"file://{path}")
        summary = yaml.safe_load((run / "summary.yaml").read_text())
        headline = driver.find_element(By.ID, "headline").text
        assert headline.startswith(f"Best valid/acc = {summary['checkpoint/score']:.4f} at step "
                                   f"{summary['checkpoint/step']}, epoch ")
        assert driver.find_element(By.TAG_NAME, "h1").text == "Run three"
        # the N x N confusion matrix: 3 rows and 3 columns, named by class
        header = [th.text for th in driver.find_elements(By.CSS_SELECTOR, "#confusion-three thead tr:first-child th")]
        assert header[-3:] == ["animal", "person", "thing"]
        rows = driver.find_elements(By.CSS_SELECTOR, "#confusion-three tbody tr")
        assert [r.find_element(By.TAG_NAME, "th").text for r in rows] == ["animal", "person", "thing"]
        assert all(len(r.find_elements(By.TAG_NAME, "td")) == 3 for r in rows)
        counts = pd.read_csv(run / "tables" / f"Confusion_Matrix-step{summary['checkpoint/step']}.csv", index_col=0)
        shown = [[int(td.text) for td in r.find_elements(By.TAG_NAME, "td")] for r in rows]
        assert shown == counts.values.tolist()
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
        assert broken == 0
        cells = {td.text for td in driver.find_elements(By.CSS_SELECTOR, "#examples-three tbody td")}
        assert cells & {"animal", "person", "thing"} and not cells & {"0", "1", "2"}
    finally:
        driver.quit()


def test_binary_sentence_pairs_from_json_lines(tmp_path, tiny_model_dir):
    rng = random.Random(0)
    words = ["the cat", "a dog", "john", "mary"]

    def rows(n):
        out = []
        for _ in range(n):
            a, b = rng.choice(words), rng.choice(words)
            out.append({"first": f"{a} saw the ball.", "second": f"{b} saw the ball.",
                        "same": "yes" if a == b else "no"})
        return out

    for name, n in (("train.jsonl", 40), ("valid.jsonl", 16)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows(n)))
    data = ["--train-file", str(tmp_path / "train.jsonl"), "--validation-file", str(tmp_path / "valid.jsonl"),
            "--text-column", "first", "--text-pair-column", "second", "--label-column", "same"]
    ok(run_script("train.py", "--model", str(tiny_model_dir), *data, "--max-epochs", "1", *QUICK, "--run-name", "pairs",
                  cwd=tmp_path, env=OFFLINE))
    run = tmp_path / "runs" / "pairs"
    best = run / "checkpoints" / "best"
    assert json.loads((best / "config.json").read_text())["id2label"] == {"0": "no", "1": "yes"}
    assert yaml.safe_load((run / "summary.yaml").read_text())["checkpoint/monitor"] == "valid/mcc"  # binary file
    examples = pd.read_csv(next((run / "tables").glob("examples-step*.csv")))
    assert list(examples.columns) == ["Sentence", "Sentence 2", "Label", "Predicted", "Probability"]
    valid = pd.read_json(tmp_path / "valid.jsonl", lines=True)
    pairs = dict(zip(valid["first"], valid["second"]))
    assert all(pairs.get(a) is not None for a in examples["Sentence"]) and set(examples["Label"]) <= {"no", "yes"}

    metrics = json.loads(ok(run_script("evaluate.py", "--checkpoint", str(best), *data, "--output-dir", str(tmp_path),
                                       "--run-name", "ev", cwd=tmp_path, env=OFFLINE)).stdout.strip().splitlines()[-1])
    probs = independent_scores(best, valid["first"].tolist(), valid["second"].tolist())  # encoded as pairs
    y, p = (valid["same"] == "yes").astype(int).to_numpy(), probs.argmax(-1).numpy()
    assert metrics["valid/acc"] == pytest.approx(skm.accuracy_score(y, p), abs=1e-6)
    assert metrics["valid/mcc"] == pytest.approx(skm.matthews_corrcoef(y, p), abs=1e-6)
    result = ok(run_script("predict.py", "--checkpoint", str(best), "a sentence.", cwd=tmp_path, env=OFFLINE))
    assert list(json.loads(result.stdout.strip())["scores"]) == ["no", "yes"]


def test_a_dataset_saved_with_save_to_disk_trains_offline(tmp_path, tiny_model_dir):
    features = datasets.Features({"sentence": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=["unacceptable", "acceptable", "odd"])})

    def split(n, seed):
        rows = tiny_rows(n, seed)
        labels = [label if i % 5 else 2 for i, (label, _) in enumerate(rows)]
        return datasets.Dataset.from_dict({"sentence": [s for _, s in rows], "label": labels}, features=features)

    datasets.DatasetDict({"train": split(40, 1), "test": split(15, 2)}).save_to_disk(str(tmp_path / "ds"))
    data = ["--dataset", str(tmp_path / "ds"), "--validation-split", "test"]
    ok(run_script("train.py", "--model", str(tiny_model_dir), *data, "--max-epochs", "1", *QUICK, "--run-name", "ds",
                  cwd=tmp_path, env=OFFLINE))
    best = tmp_path / "runs" / "ds" / "checkpoints" / "best"
    assert json.loads((best / "config.json").read_text())["id2label"] == {"0": "unacceptable", "1": "acceptable",
                                                                        "2": "odd"}
    metrics = json.loads(ok(run_script("evaluate.py", "--checkpoint", str(best), *data, "--output-dir", str(tmp_path),
                                       "--run-name", "ev", cwd=tmp_path, env=OFFLINE)).stdout.strip().splitlines()[-1])
    test = datasets.load_from_disk(str(tmp_path / "ds"))["test"]
    p = independent_scores(best, list(test["sentence"])).argmax(-1).numpy()
    assert metrics["valid/acc"] == pytest.approx(skm.accuracy_score(list(test["label"]), p), abs=1e-6)
    result = ok(run_script("predict.py", "--checkpoint", str(best), "The cat saw him.", cwd=tmp_path, env=OFFLINE))
    assert list(json.loads(result.stdout.strip())["scores"]) == ["unacceptable", "acceptable", "odd"]


@pytest.mark.parametrize("make, fragment", [
    (lambda d: (write_csv(d / "t.csv", [("a.", "x"), ("b.", "y")]), write_csv(d / "v.csv", [("c.", "q")])),
     "v.csv: labels that never occur in the training data: 'q' (row 1)"),
    (lambda d: (write_csv(d / "t.csv", [("a.", "x"), ("b.", "y")], ("sentence", "gold")),
                write_csv(d / "v.csv", [("c.", "x")], ("sentence", "gold"))), "no column 'label'"),
    (lambda d: (write_csv(d / "t.csv", [("a.", "x"), ("b.", "y")]), write_csv(d / "v.csv", [])), "v.csv: no rows"),
    (lambda d: (write_csv(d / "t.csv", [("a.", "0.5"), ("b.", "2.5")]), write_csv(d / "v.csv", [("c.", "0.5")])),
     "regression"),
])
def test_hostile_files_through_train_py_are_one_line_exit_2_nothing_written(tmp_path, tiny_model_dir, make, fragment):
    from test_scripts import _one_line_error

    train, valid = make(tmp_path)
    result = run_script("train.py", "--model", str(tiny_model_dir), "--train-file", train, "--validation-file", valid,
                        cwd=tmp_path, env=OFFLINE)
    _one_line_error(result, fragment)
    assert not (tmp_path / "runs").exists()


def test_regression_task_and_a_missing_saved_dataset_are_refused(tmp_path):
    from test_scripts import _one_line_error

    _one_line_error(run_script("train.py", "--task", "stsb", cwd=tmp_path, env=OFFLINE), "stsb is a regression task")
    _one_line_error(run_script("train.py", "--dataset", "./nope", cwd=tmp_path, env=OFFLINE),
                    "dataset folder './nope' does not exist")
    assert not (tmp_path / "runs").exists()


def test_config_reruns_a_saved_run_and_flags_override_it(three_class, tmp_path):
    from test_scripts import _one_line_error

    work, run, data, _ = three_class
    saved = run / "hparams.yaml"
    ok(run_script("train.py", "--config", str(saved), "--run-name", "again", "--output-dir", str(tmp_path),
                  cwd=work, env=OFFLINE))
    original, again = pd.read_csv(run / "metrics.csv"), pd.read_csv(tmp_path / "again" / "metrics.csv")
    pd.testing.assert_frame_equal(again, original, check_exact=True)  # deterministic: the same run again
    hparams = yaml.safe_load((tmp_path / "again" / "hparams.yaml").read_text())
    assert hparams["data"]["label_names"] == ["animal", "person", "thing"] and hparams["config"] == str(saved)

    ok(run_script("train.py", "--config", str(saved), "--max-epochs", "1", "--lr", "1e-3", "--run-name", "shorter",
                  "--output-dir", str(tmp_path), cwd=work, env=OFFLINE))
    shorter = yaml.safe_load((tmp_path / "shorter" / "hparams.yaml").read_text())
    assert shorter["max_epochs"] == 1 and shorter["lr"] == 1e-3 and shorter["batch_size"] == 8
    assert pd.read_csv(tmp_path / "shorter" / "metrics.csv")["epoch"].max() == 0

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**yaml.safe_load(saved.read_text()), "learning_rate": 0.1}))
    _one_line_error(run_script("train.py", "--config", str(bad), "--output-dir", str(tmp_path / "x"), cwd=work,
                               env=OFFLINE), "learning_rate is not a flag of train.py")
    assert not (tmp_path / "x").exists()


def test_cola_as_a_csv_file_trains_exactly_as_from_its_tsv_files(tmp_path, tiny_model_dir):
    """CoLA's own files with renamed columns and string labels, through --train-file, give the same run as
    --data-dir. `--labels unacceptable,acceptable` keeps GLUE's class order (sorted, the strings would put
    acceptable first)."""
    cola = SHIPPED_COLA
    names = {0: "unacceptable", 1: "acceptable"}
    for tsv, csv_name in (("train.tsv", "train.csv"), ("dev.tsv", "dev.csv")):
        frame = pd.read_csv(cola / tsv, sep="\t", header=None, quoting=3, names=["source", "label", "mark", "sentence"])
        frame.rename(columns={"sentence": "text"}).assign(label=frame["label"].map(names))[["label", "text"]].to_csv(
            tmp_path / csv_name, index=False)
    common = ["--model", str(tiny_model_dir), "--max-steps", "6", "--limit-val-batches", "4", "--batch-size", "16",
              "--lr", "3e-3", "--log-every-n-steps", "1", "--no-progress-bar"]
    ok(run_script("train.py", *common, "--data-dir", str(cola), "--run-name", "tsv", cwd=tmp_path,
                  env={**OFFLINE, "TEXT_CLASSIFIER_CACHE": str(tmp_path / "cache-tsv")}))
    ok(run_script("train.py", *common, "--train-file", str(tmp_path / "train.csv"), "--validation-file",
                  str(tmp_path / "dev.csv"), "--labels", "unacceptable,acceptable", "--run-name", "csv", cwd=tmp_path,
                  env={**OFFLINE, "TEXT_CLASSIFIER_CACHE": str(tmp_path / "cache-csv")}))
    tsv, csv = (pd.read_csv(tmp_path / "runs" / name / "metrics.csv") for name in ("tsv", "csv"))
    assert tsv["valid/mcc"].notna().sum() == 1
    pd.testing.assert_frame_equal(csv, tsv, check_exact=True)  # valid/mcc and every other column, bit for bit


SEED_COMMIT = "17b2441"  # main before this change: the seed's CoLA code path


def test_the_cola_run_is_the_same_as_before_this_change(tmp_path, tiny_cola, tiny_model_dir):
    """The code at SEED_COMMIT, taken from this repository's history, and the code of this checkout train the same
    tiny CoLA run: every metric the old code logged has the same values, bit for bit."""
    old = tmp_path / "old"
    old.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", SEED_COMMIT], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    args = ["--model", str(tiny_model_dir), "--data-dir", str(tiny_cola), "--max-epochs", "2", "--batch-size", "8",
            "--lr", "3e-3", "--log-every-n-steps", "1", "--no-progress-bar", "--seed", "5",
            "--head-lr", "3e-3", "--warmup-ratio", "0.1", "--weight-decay", "0.01"]  # the defaults have changed since
    for name, script in (("old", old / "scripts" / "train.py"), ("new", ROOT / "scripts" / "train.py")):
        import os
        import sys

        env = {**os.environ, **OFFLINE, "TEXT_CLASSIFIER_CACHE": str(tmp_path / f"cache-{name}")}
        ok(subprocess.run([sys.executable, str(script), *args, "--run-name", name], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300))
    before, after = (pd.read_csv(tmp_path / "runs" / name / "metrics.csv") for name in ("old", "new"))
    assert set(after.columns) - set(before.columns) == {"valid/f1_micro"}  # one added metric, none renamed
    assert before["valid/mcc"].notna().sum() == 2
    pd.testing.assert_frame_equal(after[before.columns], before, check_exact=True)
    for name in ("old", "new"):
        summary = yaml.safe_load((tmp_path / "runs" / name / "summary.yaml").read_text())
        assert summary["checkpoint/monitor"] == "valid/mcc"
    assert yaml.safe_load((tmp_path / "runs" / "old" / "summary.yaml").read_text())["checkpoint/step"] == \
        yaml.safe_load((tmp_path / "runs" / "new" / "summary.yaml").read_text())["checkpoint/step"]


def _peak_run(tmp_path, args):
    """train.py in a fresh python; (result, its peak resident memory in MiB)."""
    import subprocess
    import sys

    from conftest import shell_env

    watch = ("import atexit, resource, runpy, sys; atexit.register(lambda: sys.stderr.write('peak_kib %d\\n' % "
             "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)); "
             f"sys.argv = ['train.py', *{args!r}]; runpy.run_path({str(ROOT / 'scripts' / 'train.py')!r}, "
             "run_name='__main__')")
    result = subprocess.run([sys.executable, "-c", watch], capture_output=True, text=True, cwd=tmp_path,
                            env=shell_env(OFFLINE), timeout=600)
    peak = int(result.stderr.rsplit("peak_kib ", 1)[1].split()[0]) / 1024
    return result, peak


def test_a_thousand_classes_record_everything_in_seconds_with_memory_beyond_the_matrix_flat(tmp_path,
                                                                                             tiny_model_dir):
    """500 classes once cost ten minutes and 10 GB in the heatmap, and the run its metrics, summary and report. A
    1,000-class run of the tiny model validates and writes its whole record; it takes about as long as a 2-class run
    of the same rows, and the memory beyond the 2-class run's is about the 1,000 x 1,000 matrix, not charts."""
    import random
    import time

    rng = random.Random(0)
    words = ["the cat", "a dog", "john", "mary", "saw", "liked", "him", "the ball"]

    def write(path, n, classes):
        rows = [(" ".join(rng.choice(words) for _ in range(5)) + ".", f"c{i % classes:04d}") for i in range(n)]
        write_csv(path, rows)

    durations, peaks = {}, {}
    for classes in (2, 1000):
        write(tmp_path / f"t{classes}.csv", 1000, classes)
        write(tmp_path / f"v{classes}.csv", 1000, classes)
        start = time.monotonic()
        result, peaks[classes] = _peak_run(tmp_path, [
            "--model", str(tiny_model_dir), "--train-file", str(tmp_path / f"t{classes}.csv"), "--validation-file",
            str(tmp_path / f"v{classes}.csv"), "--max-epochs", "1", "--batch-size", "64", "--no-progress-bar",
            "--run-name", f"c{classes}"])
        durations[classes] = time.monotonic() - start
        ok(result)
    run = tmp_path / "runs" / "c1000"
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["valid/acc"].count() == 1 and yaml.safe_load((run / "status.yaml").read_text())["status"] == \
        "finished"
    summary = yaml.safe_load((run / "summary.yaml").read_text())
    assert summary["checkpoint/monitor"] == "valid/acc" and "best/valid/acc" in summary
    counts = pd.read_csv(run / "tables" / "Confusion_Matrix-step16.csv", index_col=0)
    assert counts.shape == (1000, 1000) and counts.values.sum() == 1000
    assert len(pd.read_csv(run / "tables" / "per_class-step16.csv")) == 1000
    assert {p.name for p in (run / "plots").iterdir()} == {"Confusion_Matrix-step16.png", "roc-step16.png",
                                                           "pr-step16.png"}
    assert len(pd.read_csv(run / "tables" / "roc-step16.csv")) <= 2000  # one micro-averaged curve, thinned
    assert (run / "report.html").stat().st_size < 5_000_000
    assert durations[1000] < 3 * durations[2] + 30, durations  # seconds, not minutes
    assert peaks[1000] - peaks[2] < 300, peaks  # MiB: the matrix and the probabilities, not a chart's cells


def test_evaluate_needs_only_the_file_it_scores_and_names_the_checkpoints_classes(three_class, tmp_path):
    """The checkpoint knows its classes: --validation-file alone is enough (it once demanded --train-file), and a
    label outside them is named against the checkpoint's classes, not a --labels the user never passed."""
    work, run, data, _ = three_class
    best = run / "checkpoints" / "best"
    both = json.loads(ok(run_script("evaluate.py", "--checkpoint", str(best), *data, "--output-dir", str(tmp_path),
                                    "--run-name", "both", cwd=tmp_path, env=OFFLINE)).stdout.strip().splitlines()[-1])
    alone = json.loads(ok(run_script("evaluate.py", "--checkpoint", str(best), "--validation-file", data[3],
                                     "--output-dir", str(tmp_path), "--run-name", "alone", cwd=tmp_path,
                                     env=OFFLINE)).stdout.strip().splitlines()[-1])
    assert alone == both
    odd = write_csv(tmp_path / "odd.csv", [("the cat saw a book.", "animal"), ("a plant.", "plant")])
    result = run_script("evaluate.py", "--checkpoint", str(best), "--validation-file", odd, "--output-dir",
                        str(tmp_path / "out"), cwd=tmp_path, env=OFFLINE)
    assert result.returncode == 2 and "--labels" not in result.stderr, result.stderr
    assert "labels not in the checkpoint's classes (animal, person, thing): 'plant' (row 2)" in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_class_with_no_validation_row_is_one_warning_line_not_a_dozen(tmp_path, tiny_model_dir):
    train = write_csv(tmp_path / "t.csv", [("the cat saw him.", "a"), ("a dog liked mary.", "b"),
                                           ("john kicked the ball.", "c"), ("mary met him.", "a")])
    valid = write_csv(tmp_path / "v.csv", [("the cat saw him.", "a"), ("a dog liked mary.", "b")])
    result = ok(run_script("train.py", "--model", str(tiny_model_dir), "--train-file", train, "--validation-file",
                           valid, "--max-epochs", "3", "--batch-size", "2", "--no-progress-bar", cwd=tmp_path,
                           env=OFFLINE))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == ["warning: no validation row of class c: its recall and F1 count as 0 and it has no ROC or "
                     "precision-recall curve"], lines
