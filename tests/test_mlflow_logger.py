"""The MLflow backend against a real `mlflow server` (loopback, a free port) whose store is SQLite, then PostgreSQL (a
team's server), and against the SQLite default:
scripts/train.py runs with `--logger csv,mlflow`, and the run is read back with `MlflowClient` and compared with the
run folder that the CSV backend wrote."""
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

import pg_server
from conftest import ROOT, MlflowServer
from tracking.base import flatten
from trainer.checkpoint import STATE_FILE, load_state

pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install -e '.[mlflow]'")

from mlflow import MlflowClient  # noqa: E402

SUMMARY_METRICS = {"best/valid/loss", "best/valid/loss_step", "best/valid/mcc", "best/valid/mcc_step",
                   "checkpoint/score", "checkpoint/step"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    """`mlflow server` with a SQLite store, then with a PostgreSQL one (a team's server), started once for each and
    not waited for: it boots while the first test trains without it. The last test kills it."""
    store = None if request.param == "sqlite" else pg_server.new_database(request.getfixturevalue("postgres_server"))
    server = MlflowServer(tmp_path_factory.mktemp(f"mlflow-server-{request.param}"), store)
    yield server
    server.kill()


def train_args(model_dir, tiny_cola, out, *extra):
    """2 epochs of 6 steps (48 rows, batch 8), a resumable checkpoint every 2 steps, no early stopping."""
    return ["--model", str(model_dir), "--data-dir", str(tiny_cola), "--max-epochs", "2", "--batch-size", "8",
            "--lr", "1e-3", "--dropout", "0.1", "--log-every-n-steps", "1", "--save-every-n-steps", "2",
            "--patience", "10", "--output-dir", str(out), "--run-name", "run", "--no-progress-bar",
            "--logger", "csv,mlflow", "--mlflow-experiment", "tiny", "--log-model", *extra]


def train_process(*args):
    return [sys.executable, str(ROOT / "scripts" / "train.py"), *args]


def artifact_files(client, run_id, path=None):
    for info in client.list_artifacts(run_id, path):
        yield from artifact_files(client, run_id, info.path) if info.is_dir else [info.path]


def check_run(client: MlflowClient, run_dir: Path, tmp_path: Path) -> str:
    """The MLflow run holds what the run folder holds: the same metric values at the same steps (each once), the
    summary, hyperparameters, tags, tables, figures and the best checkpoint."""
    run_id = (run_dir / "mlflow" / "run-id").read_text()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert client.get_experiment(run.info.experiment_id).name == "tiny"

    frame = pd.read_csv(run_dir / "metrics.csv")
    columns = [c for c in frame.columns if c != "step"]
    assert set(run.data.metrics) == set(columns) | SUMMARY_METRICS
    for name in columns:  # every row of metrics.csv, each once: sorted, as rows of one step may come in any order
        expected = sorted((int(s), v) for s, v in zip(frame["step"], frame[name]) if not math.isnan(v))
        got = sorted((m.step, m.value) for m in client.get_metric_history(run_id, name))
        assert [s for s, _ in got] == [s for s, _ in expected], name
        # After a resume, MLflow keeps the values the killed process logged past its checkpoint, where metrics.csv
        # holds the resumed process's; on a CPU they are the same numbers.
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-9, abs=1e-12), name
    summary = yaml.safe_load((run_dir / "summary.yaml").read_text())
    for name in SUMMARY_METRICS:
        assert run.data.metrics[name] == pytest.approx(summary[name]), name

    hparams = flatten(yaml.safe_load((run_dir / "hparams.yaml").read_text()))
    for name in ("lr", "batch_size", "max_epochs", "seed", "model", "data_dir", "git_commit", "versions.torch"):
        assert run.data.params[name] == str(hparams[name]), name
    assert run.data.tags["run_dir"] == str(run_dir.resolve())
    assert run.data.tags.get("mlflow.source.git.commit") == hparams["git_commit"]  # None outside a git checkout
    assert run.data.tags["checkpoint/path"] == summary["checkpoint/path"]

    files = set(artifact_files(client, run_id))
    written = {p.relative_to(run_dir).as_posix() for d in ("tables", "plots") for p in (run_dir / d).iterdir()}
    assert {f for f in files if f.startswith(("tables/", "plots/"))} == written
    assert {"plots/Confusion_Matrix-step12.png", "plots/roc-step12.png", "plots/pr-step12.png",
            "tables/Confusion_Matrix-step12.csv", "tables/examples-step12.csv"} <= written
    assert {"model-run/model.safetensors", "model-run/config.json"} <= files
    table = client.download_artifacts(run_id, "tables/examples-step12.csv", str(tmp_path))
    assert Path(table).read_bytes() == (run_dir / "tables" / "examples-step12.csv").read_bytes()
    return run_id


def test_without_a_server_the_run_goes_to_sqlite_in_the_output_folder(model_dir, tiny_cola, tmp_path, monkeypatch):
    from recipes import train

    monkeypatch.chdir(tmp_path)
    assert train.main(train_args(model_dir, tiny_cola, tmp_path / "out")) == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}")
    run_id = check_run(client, tmp_path / "out" / "run", tmp_path)
    assert client.get_run(run_id).info.artifact_uri.startswith((tmp_path / "out" / "mlartifacts").as_uri())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["examples-step12.csv", "out"]  # no ./mlruns


def test_kill_9_then_resume_continues_the_same_run_on_a_server(server, model_dir, tiny_cola, tmp_path,
                                                              monkeypatch, capsys, caplog):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": server.ready()}
    victim = subprocess.Popen(train_process(*train_args(model_dir, tiny_cola, tmp_path / "out")), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = tmp_path / "out" / "run" / "checkpoints" / "last" / STATE_FILE
    deadline = time.monotonic() + 240
    while not state.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere after the first checkpoint
    victim.send_signal(signal.SIGKILL)
    assert victim.wait() == -signal.SIGKILL
    run_dir = tmp_path / "out" / "run"
    first_id = (run_dir / "mlflow" / "run-id").read_text()  # the run is opened before the first checkpoint is taken
    assert load_state(state.parent)["global_step"] < 12

    from recipes import train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    assert train.main(train_args(model_dir, tiny_cola, tmp_path / "out", "--resume", "auto")) == 0
    assert "resuming from" in capsys.readouterr().out and "mlflow logger failed" not in caplog.text

    client = MlflowClient(server.url)
    assert check_run(client, run_dir, tmp_path) == first_id  # no step doubled or missing (see check_run)
    experiment = client.get_experiment_by_name("tiny")
    assert [r.info.run_id for r in client.search_runs([experiment.experiment_id])] == [first_id]  # one run
    assert not (tmp_path / "out" / "mlflow.db").exists()  # everything went to the server


def test_a_server_killed_mid_run_costs_mlflow_only(server, model_dir, tiny_cola, tmp_path, monkeypatch, caplog):
    """Kills the module's server: keep this test last."""
    from recipes import train

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.ready())
    metrics = tmp_path / "out" / "run" / "metrics.csv"

    def kill_when_training():
        while not (metrics.exists() and len(metrics.read_text().splitlines()) > 3):
            time.sleep(0.02)
        server.kill()

    killer = threading.Thread(target=kill_when_training, daemon=True)
    killer.start()
    assert train.main(train_args(model_dir, tiny_cola, tmp_path / "out")) == 0
    killer.join(timeout=1)
    assert server.proc.returncode == -signal.SIGKILL
    failures = [r.message for r in caplog.records if "the mlflow logger failed in" in r.message]
    assert len(failures) == 1 and any("mlflow logger was switched off" in r.message for r in caplog.records)
    frame = pd.read_csv(metrics)  # the CSV copy is complete
    assert frame.dropna(subset=["train/loss_step"])["step"].tolist() == list(range(1, 13))
    assert frame.dropna(subset=["valid/mcc"])["step"].tolist() == [6, 12]
    assert (tmp_path / "out" / "run" / "checkpoints" / "best" / "model.safetensors").exists()


def test_a_long_hyperparameter_is_cut_to_mlflows_limit_and_a_resume_keeps_the_first_values(tmp_path, monkeypatch):
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    from tracking.mlflow_logger import MlflowLogger

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    long = "ab" * 4000  # 8000 characters, over MLflow's 6000
    logger = MlflowLogger(str(tmp_path / "run"))
    logger.log_hyperparams({"model": {"name": "tiny", "long": long}, "lr": 0.001, "git_commit": "abc123"})
    logger.finalize()
    resumed = MlflowLogger(str(tmp_path / "run"))  # a resumed run: same run id, a changed --max-epochs is kept out
    resumed.log_hyperparams({"lr": 0.001, "max_epochs": 9, "model": {"name": "other"}})
    resumed.finalize()

    run = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}").get_run(logger.run_id)
    assert resumed.run_id == logger.run_id
    assert run.data.params["model.long"] == long[:MAX_PARAM_VAL_LENGTH] and MAX_PARAM_VAL_LENGTH == 6000
    assert run.data.params["model.name"] == "tiny" and run.data.params["lr"] == "0.001"
    assert run.data.params["max_epochs"] == "9"  # new names are added
    assert run.data.tags["mlflow.source.git.commit"] == "abc123"


def test_a_group_nests_its_runs_under_one_parent_run(tmp_path, monkeypatch):
    """`--run-group` (sweep.py's trials): every run of the group has the same parent run, named after the group."""
    from tracking.mlflow_logger import MlflowLogger

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    ids = []
    for name in ("trial-0000", "trial-0001"):
        logger = MlflowLogger(str(tmp_path / name), experiment="sweeps", run_name=name, group="s1")
        logger.log_hyperparams({"lr": 0.1})
        logger.finalize("success")
        ids.append(logger.run_id)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = [client.get_run(run_id) for run_id in ids]
    parent = runs[0].data.tags["mlflow.parentRunId"]
    assert runs[1].data.tags["mlflow.parentRunId"] == parent and parent not in ids
    assert client.get_run(parent).info.run_name == "s1" and client.get_run(parent).info.status == "FINISHED"
    experiment = client.get_experiment_by_name("sweeps").experiment_id
    assert len(client.search_runs([experiment])) == 3


def test_a_store_that_cannot_be_written_is_one_line_at_start_and_the_run_goes_on(tmp_path, model_dir, tiny_cola):
    """A read-only SQLite store (here: its file bind-mounted read-only, as root; else chmod 444) once meant MLflow's
    retries and a traceback of dozens of lines for every call: now one line when the run starts, and the CSV record
    is complete."""
    from conftest import run_script

    out = tmp_path / "out"
    out.mkdir()
    store = out / "mlflow.db"
    store.write_bytes(b"")
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "--bind", str(store), str(store)],
                                                   capture_output=True).returncode == 0
    if mounted:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(store)], check=True, capture_output=True)
    else:
        store.chmod(0o444)
    try:
        result = run_script("train.py", *train_args(model_dir, tiny_cola, out), cwd=tmp_path,
                            env={"HF_HUB_OFFLINE": "1"})
    finally:
        if mounted:
            subprocess.run(["umount", str(store)], capture_output=True)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr and len(lines) <= 2, lines
    (line,) = [line for line in lines if "mlflow" in line]
    assert line.startswith("tracking: the mlflow logger could not start (PermissionError: the MLflow store")
    assert "cannot be written" in line and "going on without it" in line
    frame = pd.read_csv(out / "run" / "metrics.csv")
    assert frame.dropna(subset=["train/loss_step"])["step"].tolist() == list(range(1, 13))
