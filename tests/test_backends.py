"""One suite for every backend: each implements the ExperimentLogger interface the same way. Built as the scripts
build them (`build_logger`, so through the failure guard, whose worker thread runs every call), fed each verb at
increasing steps, finalized twice, resumed from `state_dict()`, and read back with the tracker's own reader. MLflow
twice: its default SQLite store, and a team's `mlflow server` whose store is PostgreSQL."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from matplotlib.figure import Figure

import pg_server
from conftest import MlflowServer
from tracking import build_logger
from tracking.base import flatten

# mlflow: its default SQLite store beside the run folders; mlflow-server: a team's `mlflow server` on PostgreSQL
BACKENDS = ["none", "csv", "wandb", "tensorboard", "mlflow", "mlflow-server"]
RESUME_WITHOUT_REPEATS = {"csv", "mlflow", "mlflow-server"}  # the others may show the steps logged after the
# checkpoint twice


@pytest.fixture(scope="module")
def mlflow_output(tmp_path_factory):
    """One output folder for the module's MLflow runs, so that its SQLite store is created once."""
    return tmp_path_factory.mktemp("mlflow-output")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory, postgres_server):
    """`mlflow server` with a PostgreSQL store and a folder as artifact store, for the module."""
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), pg_server.new_database(postgres_server))
    yield server
    server.kill()


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path, mlflow_output, monkeypatch):
    """(name, run folder, make): `make()` builds the backend on that run folder, again for a resumed process."""
    name = request.param
    run_dir = (mlflow_output if name == "mlflow" else tmp_path) / request.node.name.replace("[", "-").strip("]")
    if name == "mlflow-server":
        monkeypatch.setenv("MLFLOW_TRACKING_URI", request.getfixturevalue("mlflow_server").ready())
    spec = name.split("-")[0]
    return name, run_dir, lambda: build_logger(spec, str(run_dir), run_name=run_dir.name, mode="offline")


def finish(logger):
    logger.finalize()
    logger.finalize()  # a second finalize is harmless
    assert [getattr(b, "failure", None) for b in logger.backends()] == [None] * len(logger.backends())


def test_each_verb_at_increasing_steps_is_read_back(backend, tmp_path):
    name, run_dir, make = backend
    artifact = tmp_path / "weights.bin"
    artifact.write_bytes(b"weights")
    figure = Figure(figsize=(3, 2))
    figure.subplots().plot([0, 1], [0, 1])

    logger = make()
    logger.log_hyperparams({"lr": 0.001, "model": {"name": "tiny", "layers": 2}})
    logger.log_metrics({"train/loss": 0.5}, step=1)
    logger.log_metrics({"train/loss": 0.25}, step=2)
    logger.log_metrics({"train/loss": 0.125, "valid/acc": 0.75}, step=3)  # a metric that first appears mid-run
    logger.log_table("examples", pd.DataFrame({"Sentence": ["a b", "c"], "Label": [0, 1]}), step=3)
    logger.log_image("curve", figure, step=3)
    logger.log_image("pixels", np.zeros((4, 6, 3), np.uint8), step=3)
    logger.log_summary({"best/valid/acc": 0.75, "best/valid/acc_step": 3})
    logger.log_artifact(str(artifact), "model-run", aliases=("best",))
    finish(logger)

    if name == "none":
        assert not run_dir.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["weights.bin"]
        return
    back = READERS[name](run_dir)
    assert back["metrics"] == {"train/loss": [(1, 0.5), (2, 0.25), (3, 0.125)], "valid/acc": [(3, 0.75)]}
    params = {k: str(v) for k, v in back["params"].items()}
    assert params.items() >= {"lr": "0.001", "model.name": "tiny", "model.layers": "2"}.items()
    assert "examples" in back["tables"] and {"curve", "pixels"} <= back["images"]
    assert back["summary"]["best/valid/acc"] == 0.75 and back["summary"]["best/valid/acc_step"] == 3
    assert "model-run" in back["artifacts"]


def test_state_dict_round_trip_continues_the_run(backend):
    name, run_dir, make = backend
    first = make()
    first.log_hyperparams({"lr": 0.001, "resume": "none"})
    first.log_metrics({"train/loss": 0.5}, step=1)
    first.log_metrics({"train/loss": 0.25}, step=2)
    state = first.state_dict()  # a checkpoint at step 2
    first.log_metrics({"train/loss": 0.125}, step=3)  # logged after it: the resumed process logs it again
    first.finalize("interrupted")

    path = run_dir.parent / f"{run_dir.name}-state.pt"
    torch.save(state, path)
    state = torch.load(path, weights_only=True)  # plain containers only, as a checkpoint needs
    resumed = make()
    resumed.log_hyperparams({"lr": 0.001, "resume": "auto"})  # a changed value must not stop the backend
    resumed.load_state_dict(state)
    resumed.log_metrics({"train/loss": 0.125}, step=3)
    resumed.log_metrics({"train/loss": 0.0625}, step=4)
    finish(resumed)

    if name == "none":
        assert state == {} and not run_dir.exists()
        return
    steps = [step for step, _ in READERS[name](run_dir)["metrics"]["train/loss"]]
    if name in RESUME_WITHOUT_REPEATS:
        assert steps == [1, 2, 3, 4]
    else:
        assert set(steps) >= {3, 4}


# --- each tracker's own reader -----------------------------------------------------------------------------------

def read_csv(run_dir: Path) -> dict:
    frame = pd.read_csv(run_dir / "metrics.csv")
    metrics = {c: [(int(s), v) for s, v in zip(frame["step"], frame[c]) if not math.isnan(v)]
               for c in frame.columns if c not in ("epoch", "step")}
    return {"metrics": metrics, "params": flatten(yaml.safe_load((run_dir / "hparams.yaml").read_text())),
            "tables": {p.stem.rsplit("-step", 1)[0] for p in (run_dir / "tables").glob("*.csv")},
            "images": {p.stem.rsplit("-step", 1)[0] for p in (run_dir / "plots").glob("*.png")},
            "summary": yaml.safe_load((run_dir / "summary.yaml").read_text()) if (run_dir / "summary.yaml").exists()
            else {},
            "artifacts": set(pd.read_csv(run_dir / "artifacts.csv")["name"]) if (run_dir / "artifacts.csv").exists()
            else set()}


def read_wandb(run_dir: Path) -> dict:
    folder = max((run_dir / "wandb").glob("offline-run-*"))  # the newest: a resumed run writes a second folder
    leet = [sys.executable, "-m", "wandb", "leet", "inspect", "--json"]
    records = [json.loads(line) for line in subprocess.run([*leet, str(folder)], capture_output=True, text=True,
                                                           timeout=120, check=True).stdout.splitlines() if line]
    summary = json.loads(subprocess.run([*leet, "--summary", str(folder)], capture_output=True, text=True,
                                        timeout=120, check=True).stdout)
    rows = [r["history"]["item"] for r in records if r.get("type") == "history"]
    metrics: dict = {}
    for row in rows:
        for key, value in row.items():
            if isinstance(value, (int, float)) and not key.startswith("_") and "." not in key \
                    and key != "trainer/global_step":
                metrics.setdefault(key, []).append((row["trainer/global_step"], value))
    kinds = {k[: -len("._type")]: v for row in rows for k, v in row.items() if k.endswith("._type")}
    return {"metrics": metrics, "params": flatten(summary["config"]),
            "tables": {k for k, v in kinds.items() if v == "table-file"},
            "images": {k for k, v in kinds.items() if v == "image-file"}, "summary": summary["summary"],
            "artifacts": {r["artifact"]["name"] for r in records if r.get("type") == "artifact"}}


def read_tensorboard(run_dir: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import metadata

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    start = metadata.parse_session_start_info_plugin_data(
        acc.PluginTagToContent("hparams")[metadata.SESSION_START_INFO_TAG])
    params = {k: v.string_value or v.number_value for k, v in start.hparams.items()}
    text = {t.rsplit("/", 1)[0]: acc.Tensors(t)[-1].tensor_proto.string_val[0].decode()
            for t in tags["tensors"] if t.endswith("/text_summary")}
    summary = dict(line.strip("| ").split(" | ") for line in text.get("summary", "").splitlines()[2:])
    return {"metrics": {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in tags["scalars"]},
            "params": {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in params.items()},
            "tables": set(text) - {"summary", "artifacts"}, "images": set(tags["images"]),
            "summary": {k.strip(): float(v) for k, v in summary.items()},
            "artifacts": {"model-run"} if "model-run (model, best)" in text.get("artifacts", "") else set()}


def read_mlflow(run_dir: Path) -> dict:
    """From the store the run went to: $MLFLOW_TRACKING_URI (a server), else the SQLite file beside the run."""
    import os

    from mlflow import MlflowClient

    client = MlflowClient(os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{run_dir.parent / 'mlflow.db'}")
    run_id = (run_dir / "mlflow" / "run-id").read_text()
    run = client.get_run(run_id)

    def files(path=None):
        for info in client.list_artifacts(run_id, path):
            yield from files(info.path) if info.is_dir else [info.path]

    paths = list(files())
    stems = {Path(p).stem.rsplit("-step", 1)[0] for p in paths}
    return {"metrics": {k: [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, k),
                                                                key=lambda m: (m.step, m.timestamp))]
                        for k in run.data.metrics if not k.startswith("best/")},
            "params": run.data.params, "summary": run.data.metrics,
            "tables": {s for s in stems if any(p.startswith(f"tables/{s}-") for p in paths)},
            "images": {s for s in stems if any(p.startswith(f"plots/{s}-") for p in paths)},
            "artifacts": {p.split("/")[0] for p in paths} - {"tables", "plots"}}


READERS = {"csv": read_csv, "wandb": read_wandb, "tensorboard": read_tensorboard, "mlflow": read_mlflow,
           "mlflow-server": read_mlflow}
