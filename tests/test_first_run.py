"""A new user's first run, word for word from the README, in a fresh copy of the project that has no ../shared next
to it and no network: it trains all-MiniLM-L6-v2 on the CoLA files shipped with the project and writes the whole
record, with one line per validation on a stdout that is not a terminal."""
import re
import shutil
import subprocess
import sys

import pandas as pd
import yaml

from conftest import ROOT, shell_env


def readme_trial_command() -> list[str]:
    """The one-minute trial's command as the README gives it."""
    readme = (ROOT / "README.md").read_text()
    line = re.search(r"^python scripts/train\.py (--max-epochs 1 --limit-train-batches \d+)", readme, re.M)
    assert line, "the README's first-run command is gone"
    return line.group(1).split()


def test_a_fresh_copy_with_no_network_trains_the_readme_trial_and_writes_the_record(tmp_path):
    clone = tmp_path / "clone" / "project"  # a sibling ../shared does not exist here
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.split(b"\0")  # what a commit would hold
    for name in filter(None, (f.decode() for f in files)):
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    assert not (clone.parent / "shared").exists() and (clone / "data" / "cola" / "train.tsv").is_file()
    env = shell_env({"HF_HUB_OFFLINE": "1", "PYTHONPATH": str(clone)})  # the copy's packages, not this checkout's
    env.pop("COLA_DIR", None)
    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run([sys.executable, str(clone / "scripts" / "train.py"), *readme_trial_command()], cwd=work,
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (folder,) = (work / "runs").iterdir()
    lines = result.stdout.splitlines()
    assert lines[0] == f"run folder: {folder}"
    (line,) = [line for line in lines if line.startswith("epoch ")]  # one validation, one line, in a pipe
    assert re.fullmatch(r"epoch 0, step 60: valid/mcc -?\d\.\d{4} \(best -?\d\.\d{4} at step 60\), valid/loss "
                        r"\d\.\d{4}, train/loss \d\.\d{4}, (\d+ min )?\d+ s", line), line
    assert len(line) < 120
    assert f"report: {folder / 'report.html'}" in lines
    hparams = yaml.safe_load((folder / "hparams.yaml").read_text())
    assert hparams["data"]["from"] == str(clone / "data" / "cola")  # the shipped files, not the Hub
    assert hparams["data"]["rows"] == {"train": 8551, "validation": 1043}
    assert yaml.safe_load((folder / "status.yaml").read_text())["status"] == "finished"
    metrics = pd.read_csv(folder / "metrics.csv")
    assert metrics["valid/mcc"].count() == 1 and metrics["train/loss_step"].count() == 6
    summary = yaml.safe_load((folder / "summary.yaml").read_text())
    assert summary["checkpoint/step"] == 60 and (folder / "checkpoints" / "best" / "model.safetensors").is_file()
    for name in ("Confusion_Matrix", "per_class", "examples", "roc", "pr"):
        assert (folder / "tables" / f"{name}-step60.csv").is_file(), name
    assert "Best valid/mcc" in (folder / "report.html").read_text()
