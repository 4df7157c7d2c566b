"""The W&B backend, offline, read back with wandb's own reader (`wandb leet inspect --json`)."""
import json
import math
import socket
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest

from conftest import run_script

SECRET_KEY = "0123456789abcdef0123456789abcdef01234567"  # the shape of a W&B API key
SECRET_TOKEN = "hf_PlantedTokenThatMustNeverBeLogged42"
SEED_SCALARS = {"train/loss_step", "train/loss_epoch", "train/acc_step", "train/acc_epoch", "valid/loss_step",
                "valid/loss_epoch", "valid/acc", "valid/precision_macro", "valid/recall_macro",
                "valid/precision_micro", "valid/recall_micro", "valid/f1", "valid/mcc"}


def wandb_records(run_dir):
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(run_dir)],
                         capture_output=True, text=True, timeout=120, check=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]


def wandb_summary(run_dir):
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--summary", "--json", str(run_dir)],
                         capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def offline_run(run):
    (folder,) = (run / "wandb").glob("offline-run-*")
    return folder


@pytest.fixture(scope="module")
def wandb_run(tmp_path_factory, tiny_cola, tiny_tokenizer):
    from conftest import tiny_bert

    work = tmp_path_factory.mktemp("wandb-work")
    model_dir = work / "model"
    tiny_bert(tiny_tokenizer).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    env = {"WANDB_API_KEY": SECRET_KEY, "MY_SERVICE_TOKEN": SECRET_TOKEN, "HF_HUB_OFFLINE": "1"}
    for var in ("WANDB_DIR", "WANDB_DATA_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR"):
        env[var] = str(work / var.lower())
    result = run_script("train.py", "--model", str(model_dir), "--data-dir", str(tiny_cola), "--max-epochs", "2",
                        "--batch-size", "8", "--lr", "1e-3", "--log-every-n-steps", "1", "--run-name", "wb",
                        "--logger", "wandb,csv", "--wandb-mode", "offline", "--log-model", "--wandb-tags", "a,b",
                        "--no-progress-bar", cwd=work, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    run = work / "runs" / "wb"
    return result, run, offline_run(run), wandb_records(offline_run(run)), wandb_summary(offline_run(run))


def history(records):
    return [r["history"]["item"] for r in records if r.get("type") == "history"]


def test_every_seed_scalar_equals_the_csv_row_of_the_same_step(wandb_run):
    _, run, _, records, _ = wandb_run
    rows = history(records)
    logged = {k.split(".")[0] for row in rows for k in row}  # media rows arrive flattened: "examples.path"
    assert SEED_SCALARS <= logged
    # wandb.plot custom charts are stored as "<key>_table" plus a chart spec
    assert {"conf_table", "cm", "Confusion Matrix", "roc_table", "pr_table", "examples"} <= logged

    from_wandb = {(row["trainer/global_step"], k): v for row in rows for k, v in row.items()
                  if k in SEED_SCALARS or k == "epoch"}
    frame = pd.read_csv(run / "metrics.csv")
    from_csv = {(int(r["step"]), k): r[k] for _, r in frame.iterrows() for k in frame.columns
                if k in SEED_SCALARS and not math.isnan(r[k])}
    scalars = {key: value for key, value in from_wandb.items() if key[1] != "epoch"}
    assert scalars.keys() == from_csv.keys()
    for key, value in from_csv.items():
        assert scalars[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key

    steps = [row["trainer/global_step"] for row in rows]
    assert steps == sorted(steps)  # the x-axis never goes back
    metrics = [r for r in records if r.get("type") == "metric"]
    assert any("trainer/global_step" in json.dumps(m) for m in metrics)  # declared with define_metric


def test_examples_table_is_the_misclassified_dev_sentences(wandb_run):
    _, run, folder, records, _ = wandb_run
    tables = [(row["trainer/global_step"], row["examples.path"]) for row in history(records) if "examples.path" in row]
    assert [step for step, _ in tables] == [6, 12]  # after every validation
    for step, path in tables:
        table = json.loads((folder / "files" / path).read_text())
        assert table["columns"] == ["Sentence", "Label", "Predicted", "Probability"]
        expected = pd.read_csv(run / "tables" / f"examples-step{step}.csv")
        assert [row[0] for row in table["data"]] == expected["Sentence"].tolist()
        assert all(row[1] != row[2] for row in table["data"])
        assert [row[3] for row in table["data"]] == pytest.approx(expected["Probability"].tolist())


def test_summary_config_and_model_artifact(wandb_run):
    _, run, _, records, summary = wandb_run
    frame = pd.read_csv(run / "metrics.csv").dropna(subset=["valid/mcc"])
    best_loss, best_mcc = frame.loc[frame["valid/loss_epoch"].idxmin()], frame.loc[frame["valid/mcc"].idxmax()]
    values = summary["summary"]
    assert values["best/valid/loss"] == pytest.approx(best_loss["valid/loss_epoch"])
    assert values["best/valid/loss_step"] == best_loss["step"]
    assert values["best/valid/mcc"] == pytest.approx(best_mcc["valid/mcc"])
    assert values["best/valid/mcc_step"] == best_mcc["step"]
    assert summary["state"] == "finished" and str(summary["exit_code"]) == "0"
    assert summary["project"] == "MLOps Basics" and summary["name"] == "wb"

    config = summary["config"]
    for key in ("model", "batch_size", "lr", "seed", "max_epochs", "data_dir", "versions", "git_commit"):
        assert key in config, key
    assert config["batch_size"] == 8 and config["versions"]["torch"]

    artifacts = [r["artifact"] for r in records if r.get("type") == "artifact" and r["artifact"]["type"] == "model"]
    assert len(artifacts) == 1
    assert artifacts[0]["name"] == "model-wb" and set(artifacts[0]["aliases"]) >= {"best", "latest"}
    assert {c["path"] for c in artifacts[0]["manifest"]["contents"]} >= {"config.json", "model.safetensors"}


def test_no_planted_secret_reaches_any_file(wandb_run):
    result, run, *_ = wandb_run
    for path in run.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert SECRET_KEY.encode() not in data and SECRET_TOKEN.encode() not in data, path
    assert SECRET_KEY not in result.stdout + result.stderr


def test_scrub_redacts_secret_names_token_values_and_environment_secrets(monkeypatch):
    from tracking.secrets import REDACTED, scrub

    monkeypatch.setenv("SOME_API_TOKEN", "a-value-from-the-environment")
    params = {"lr": 1e-3, "wandb_api_key": "x", "nested": {"password": "p", "note": "uses a-value-from-the-environment"},
              "tags": ["ok", "sk-" + "A1" * 20], "git_commit": SECRET_KEY, "run_name": "20261127-101500"}
    assert scrub(params, public=("git_commit",)) == {"lr": 1e-3, "wandb_api_key": REDACTED, "nested": {"password": REDACTED, "note": REDACTED},
                             "tags": ["ok", REDACTED], "git_commit": SECRET_KEY, "run_name": "20261127-101500"}


def test_mode_without_credentials_is_offline_and_says_so(monkeypatch, tmp_path, caplog):
    from tracking.wandb_logger import choose_mode

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert choose_mode(None, probe_timeout=1) == "offline"
    assert "no API key found" in caplog.text and "wandb sync" in caplog.text
    assert choose_mode("disabled", probe_timeout=1) == "disabled"
    (tmp_path / "netrc").write_text("machine api.wandb.ai login user password " + SECRET_KEY + "\n")
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # closed port: refused at once
    assert choose_mode("online", probe_timeout=1) == "offline"


@pytest.fixture
def silent_server():
    """A local port that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held, stop = [], threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_unreachable_server_does_not_stop_or_stall_training(tmp_path, tiny_cola, tiny_tokenizer, silent_server):
    from conftest import tiny_bert

    model_dir = tmp_path / "model"
    tiny_bert(tiny_tokenizer).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    common = ["--model", str(model_dir), "--data-dir", str(tiny_cola), "--max-epochs", "1", "--batch-size", "8",
              "--no-progress-bar", "--log-every-n-steps", "2"]
    env = {"HF_HUB_OFFLINE": "1", "WANDB_BASE_URL": silent_server, "WANDB_API_KEY": SECRET_KEY}

    start = time.monotonic()
    plain = run_script("train.py", *common, "--run-name", "plain", "--logger", "csv", cwd=tmp_path, env=env)
    plain_s = time.monotonic() - start
    start = time.monotonic()
    online = run_script("train.py", *common, "--run-name", "online", "--logger", "csv,wandb", "--wandb-mode", "online",
                        cwd=tmp_path, env=env, timeout=240)
    online_s = time.monotonic() - start

    assert plain.returncode == 0 and online.returncode == 0, online.stderr[-3000:]
    assert "logging offline" in online.stderr
    a = pd.read_csv(tmp_path / "runs" / "plain" / "metrics.csv")
    b = pd.read_csv(tmp_path / "runs" / "online" / "metrics.csv")
    assert list(a.columns) == list(b.columns) and len(a) == len(b)  # the CSV copy holds every metric
    assert online_s - plain_s < 30, (online_s, plain_s)


def test_interrupted_run_is_finished_as_failed(tmp_path, monkeypatch):
    from tracking.wandb_logger import WandbLogger
    from test_trainer import Toy, loader
    from trainer import Trainer

    class Interrupted(Toy):
        def training_step(self, batch, batch_idx):
            if self.global_step == 2:
                raise KeyboardInterrupt
            return super().training_step(batch, batch_idx)

    logger = WandbLogger(str(tmp_path / "run"), mode="offline", run_name="ctrl-c")
    trainer = Trainer(max_epochs=3, log_every_n_steps=1, logger=logger, enable_progress_bar=False)
    with pytest.raises(KeyboardInterrupt):
        try:
            trainer.fit(Interrupted(), loader(batch_size=2))
        finally:  # the logger's owner (the script) finalizes it
            logger.finalize("interrupted")
    summary = wandb_summary(offline_run(tmp_path / "run"))
    assert str(summary["exit_code"]) == "1" and summary["state"] != "finished"
    assert [row["trainer/global_step"] for row in history(wandb_records(offline_run(tmp_path / "run")))] == [1, 2]


def test_confusion_matrix_flag_picks_the_charts_and_no_key_holds_two_kinds(tmp_path):
    """--confusion-matrix sklearn,seaborn: `cm` and the heatmap image, no `conf`; W&B draws its own ROC and PR
    charts, and no table of points or figure is logged under the same keys."""
    import numpy as np

    from models.charts import log_classification_charts
    from tracking import build_logger

    logger = build_logger("wandb", str(tmp_path / "run"), mode="offline")
    y, probs = [0, 1, 1, 0, 1], np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.4, 0.6], [0.1, 0.9]])
    log_classification_charts(logger, y, probs, ["unacceptable", "acceptable"], step=5,
                              wandb_charts=("sklearn", "seaborn"))
    logger.finalize()
    assert logger.failure is None
    rows = history(wandb_records(offline_run(tmp_path / "run")))
    assert [r["trainer/global_step"] for r in rows] == [5, 5, 5]  # confusion matrices, ROC, PR
    kinds: dict[str, set] = {}
    for row in rows:
        for key, value in row.items():
            if key.endswith("._type"):
                kinds.setdefault(key[: -len("._type")], set()).add(value)
    assert kinds == {"Confusion Matrix": {"image-file"}, "cm": {"table-file"}, "roc_table": {"table-file"},
                     "pr_table": {"table-file"}}  # no `conf`, and one kind per key


def test_a_run_group_is_the_w_and_b_group(tmp_path):
    """`--run-group` (sweep.py's trials share one): the run's W&B group."""
    from tracking.wandb_logger import WandbLogger

    logger = WandbLogger(str(tmp_path / "run"), mode="offline", run_name="trial-0003", group="s1")
    try:
        assert logger.run.group == "s1" and logger.run.name == "trial-0003"
    finally:
        logger.finalize("success")
