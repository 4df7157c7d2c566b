"""The HTML report: self-contained, right content, and working in a real (headless Chromium) browser."""
import base64
import io
import re

import pandas as pd
import pytest
from PIL import Image

from conftest import headless_chromium, needs_chromium, run_script, tiny_bert
from selenium.webdriver.common.by import By
from data import TextClassificationDataModule
from models import SequenceClassifier, MisclassifiedExamples
from tracking import CSVLogger
from models.report import build_report
from trainer import BestScores, ModelCheckpoint, Trainer, seed_everything


def train_run(run_dir, tiny_cola, tokenizer, lr, epochs=2, make_logger=CSVLogger):
    seed_everything(0)
    model = SequenceClassifier(model=tiny_bert(tokenizer), tokenizer=tokenizer, lr=lr)
    dm = TextClassificationDataModule(tokenizer, data_dir=str(tiny_cola), batch_size=8).setup()
    logger = make_logger(str(run_dir))
    logger.log_hyperparams({"lr": lr, "batch_size": 8, "model": {"name": "tiny-bert"}})
    trainer = Trainer(max_epochs=epochs, log_every_n_steps=2, logger=logger, default_root_dir=str(run_dir),
                      enable_progress_bar=False,
                      callbacks=[ModelCheckpoint(monitor="valid/mcc", mode="max"),
                                 MisclassifiedExamples(dm.sentences["validation"]),
                                 BestScores({"valid/loss": "min", "valid/mcc": "max"})])
    trainer.fit(model, dm.train_dataloader(), dm.val_dataloader())
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_cola, tiny_tokenizer):
    base = tmp_path_factory.mktemp("report-runs")
    return [train_run(base / "run-a", tiny_cola, tiny_tokenizer, 1e-3),
            train_run(base / "run-b", tiny_cola, tiny_tokenizer, 3e-3, epochs=3)]


def images(document):
    return re.findall(r'<img alt="[^"]*"(?: id="[^"]*")? src="data:image/png;base64,([^"]+)">', document)


def test_single_run_report_is_self_contained_and_complete(runs, tmp_path):
    run = runs[0]
    path = build_report([str(run)], str(tmp_path / "report.html"))
    document = open(path, encoding="utf-8").read()
    assert not re.search(r'(src|href)="(https?:)?//', document)  # no CDN, no remote font or script
    pngs = images(document)
    # losses, validation scores, training accuracy; confusion matrix, ROC, precision-recall
    assert len(pngs) == 6
    for data in pngs:
        with Image.open(io.BytesIO(base64.b64decode(data))) as image:
            assert image.format == "PNG" and image.size[0] > 100
    summary = __import__("yaml").safe_load((run / "summary.yaml").read_text())
    step = summary["checkpoint/step"]
    examples = pd.read_csv(run / "tables" / f"examples-step{step}.csv")
    table = re.search(r'<table[^>]*id="examples-run-a".*?</table>', document, re.S).group(0)
    assert table.count("<tr") - 1 == len(examples)  # one header row
    assert f"at step {step}" in document and str(run / "checkpoints" / "best") in document
    settings = re.search(r'<table[^>]*id="hparams-run-a".*?</table>', document, re.S).group(0)
    assert "batch_size" in settings and "model.name" in settings and "tiny-bert" in settings
    # the headline comes first: the monitored metric's best score, its step and epoch, the checkpoint
    best = pd.read_csv(run / "metrics.csv").dropna(subset=["valid/mcc"])
    best = best[best["step"] == step].iloc[0]
    headline = re.search(r'<p class="headline" id="headline">(.*?)</p>', document).group(1)
    assert document.index(headline) < document.index("<img")
    assert headline == (f"Best valid/mcc = {summary['checkpoint/score']:.4f} at step {step}, epoch "
                        f"{int(best['epoch'])}; checkpoint {run / 'checkpoints' / 'best'}.")
    assert "CoLA" not in re.sub(r"<img[^>]*>", "", document)
    scores = re.search(r'<table[^>]*id="scores-run-a".*?</table>', document, re.S).group(0)
    assert f"best checkpoint (step {step})" in scores
    assert re.search(rf"<td>valid/mcc</td>\s*<td>{best['valid/mcc']:.4f}</td>", scores)
    # accuracy and the micro scores are one row (equal at every validation): each curve and score once
    assert "valid/acc (= " in scores and "<td>valid/precision_micro</td>" not in scores
    labels = set(examples["Label"]) | set(examples["Predicted"])
    assert labels <= {"unacceptable", "acceptable"}  # class names, not 0/1
    per_class = re.search(r'<table[^>]*id="per_class-run-a".*?</table>', document, re.S).group(0)
    assert "unacceptable" in per_class and "acceptable" in per_class


def test_several_runs_are_compared(runs, tmp_path):
    document = open(build_report([str(r) for r in runs], str(tmp_path / "c.html")), encoding="utf-8").read()
    compare = re.search(r'<table[^>]*id="compare".*?</table>', document, re.S).group(0)
    assert compare.count("<tr") == 3 and "run-a" in compare and "run-b" in compare
    assert len(images(document)) == 3 + 2 * 3  # overlaid curves once (3 charts), then each run's matrix, ROC, PR
    differ = re.search(r'<table[^>]*id="hparams-diff".*?</table>', document, re.S).group(0)
    rows = re.findall(r"<tr>\s*<td>(.*?)</td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>", differ, re.S)
    assert rows == [("lr", "0.001", "0.003")]  # the one hyperparameter the two runs do not share


def test_report_script_and_a_folder_that_is_not_a_run(runs, tmp_path):
    result = run_script("report.py", str(runs[0]), str(runs[1]), "-o", str(tmp_path / "r.html"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"report: {tmp_path / 'r.html'}"
    result = run_script("report.py", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2 and "not a run folder (no metrics.csv)" in result.stderr
    assert "Traceback" not in result.stderr


@needs_chromium
def test_report_in_headless_chromium(runs, tmp_path):
    from selenium.webdriver.common.by import By

    run = runs[0]
    path = build_report([str(run)], str(tmp_path / "report.html"))
    with headless_chromium(tmp_path / "profile") as driver:
        driver.get(f"file://{path}")
        errors = [entry for entry in driver.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
        assert errors == []
        broken = driver.execute_script(
            "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length")
        assert driver.execute_script("return document.images.length") == 6 and broken == 0

        step = __import__("yaml").safe_load((run / "summary.yaml").read_text())["checkpoint/step"]
        examples = pd.read_csv(run / "tables" / f"examples-step{step}.csv")
        rows = driver.find_elements(By.CSS_SELECTOR, "#examples-run-a tbody tr")
        assert len(rows) == len(examples) > 1

        header = driver.find_element(By.XPATH, "//table[@id='examples-run-a']//th[text()='Probability']")
        header.click()
        shown = [float(r.find_elements(By.TAG_NAME, "td")[3].text) for r in
                 driver.find_elements(By.CSS_SELECTOR, "#examples-run-a tbody tr")]
        assert shown == sorted(shown)
        word = examples["Sentence"].iloc[0].split()[0]
        driver.find_element(By.CSS_SELECTOR, "input.filter").send_keys(word)
        visible = [r for r in driver.find_elements(By.CSS_SELECTOR, "#examples-run-a tbody tr") if r.is_displayed()]
        assert len(visible) == examples["Sentence"].str.lower().str.contains(word.lower(), regex=False).sum()
        assert driver.get_log("browser") == []
        driver.save_screenshot(str(tmp_path / "report.png"))
        with Image.open(tmp_path / "report.png") as shot:
            assert shot.size[0] > 1000


@needs_chromium
@pytest.mark.parametrize("several", [False, True])
def test_the_answer_is_on_the_first_screen_and_nothing_is_wider_than_the_window(runs, tmp_path, several):
    """At 1280 x 900: the monitored metric's best value, the scores, the confusion matrix and each class's scores
    are on the first screen, and the page never scrolls sideways (a comparison too)."""
    from conftest import first_screen_and_width

    dirs = [str(r) for r in runs] if several else [str(runs[0])]
    path = build_report(dirs, str(tmp_path / "report.html"))
    with headless_chromium(tmp_path / "profile", size=(1280, 900)) as driver:
        driver.get(f"file://{path}")
        ids = ["headline"] if several else ["headline", "scores-run-a", "confusion-image-run-a", "per_class-run-a"]
        tops, scroll_width, width = first_screen_and_width(driver, ids)
        assert scroll_width <= width, (scroll_width, width)
        assert all(top < 900 for top in tops.values()), tops
        if not several:
            bottom = driver.execute_script(
                "return document.getElementById('confusion-image-run-a').getBoundingClientRect().bottom")
            assert bottom < 900  # the whole matrix, not only its top
            assert "valid/mcc" in driver.find_element(By.ID, "headline").text
