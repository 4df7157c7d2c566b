import inspect
import threading
import time

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image
from matplotlib.figure import Figure

from tracking import CSVLogger, ExperimentLogger, MultiLogger, NoOpLogger, build_logger, parse_logger_names
from tracking.guard import GuardedLogger
from tracking.mlflow_logger import MlflowLogger
from tracking.tensorboard_logger import TensorBoardLogger
from tracking.wandb_logger import WandbLogger


def test_csv_round_trip_with_a_metric_that_first_appears_mid_run(tmp_path):
    logger = CSVLogger(str(tmp_path / "run"))
    logger.log_metrics({"train/loss_step": 0.5, "epoch": 0}, step=10)
    logger.log_metrics({"train/loss_step": 0.25, "epoch": 0}, step=20)
    logger.log_metrics({"valid/mcc": 0.125, "valid/acc": 0.75, "epoch": 0}, step=20)  # new columns mid-run
    logger.log_metrics({"train/loss_step": 0.125, "epoch": 1}, step=30)

    frame = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert list(frame.columns) == ["epoch", "step", "train/loss_step", "valid/acc", "valid/mcc"]
    assert frame["step"].tolist() == [10, 20, 20, 30]
    assert frame["epoch"].tolist() == [0, 0, 0, 1]
    assert frame["train/loss_step"].tolist()[:2] == [0.5, 0.25] and frame["train/loss_step"].iloc[3] == 0.125
    assert np.isnan(frame["train/loss_step"].iloc[2])
    assert frame["valid/mcc"].iloc[2] == 0.125 and frame["valid/acc"].iloc[2] == 0.75
    assert frame["valid/mcc"].isna().sum() == 3
    logger.finalize()


def test_csv_rows_are_on_disk_before_finalize(tmp_path):
    """A killed run keeps what it logged: every row is flushed when written."""
    logger = CSVLogger(str(tmp_path))
    for step in range(1, 4):
        logger.log_metrics({"a": step / 10}, step=step)
    frame = pd.read_csv(tmp_path / "metrics.csv")  # logger still open
    assert frame["a"].tolist() == [0.1, 0.2, 0.3]


def test_csv_hparams_tables_plots_and_artifacts(tmp_path):
    run = tmp_path / "run"
    logger = CSVLogger(str(run))
    logger.log_hyperparams({"lr": 5e-5, "nested": {"model": "minilm"}, "path": tmp_path})
    logger.log_hyperparams({"seed": 7})
    assert yaml.safe_load((run / "hparams.yaml").read_text()) == {
        "lr": 5e-5, "nested": {"model": "minilm"}, "path": str(tmp_path), "seed": 7}

    table = pd.DataFrame({"Sentence": ["a, \"quoted\" one", "two"], "Label": [0, 1], "Predicted": [1, 0]})
    logger.log_table("examples", table, step=12)
    pd.testing.assert_frame_equal(pd.read_csv(run / "tables" / "examples-step12.csv"), table)

    logger.log_image("random", (np.arange(48, dtype=np.uint8).reshape(4, 4, 3)), step=3)
    with Image.open(run / "plots" / "random-step3.png") as image:
        assert np.array_equal(np.asarray(image), np.arange(48, dtype=np.uint8).reshape(4, 4, 3))
    figure = Figure(figsize=(4, 3))
    figure.subplots().plot([0, 1], [1, 0])
    logger.log_image("valid/curve", figure, step=12)
    with Image.open(run / "plots" / "valid-curve-step12.png") as image:
        assert image.size == (400, 300)  # 4 x 3 inches at 100 dpi
    logger.log_summary({"best/valid/mcc": 0.5, "best/valid/mcc_step": 12})
    assert yaml.safe_load((run / "summary.yaml").read_text()) == {"best/valid/mcc": 0.5, "best/valid/mcc_step": 12}

    outside = tmp_path / "model.bin"
    outside.write_bytes(b"weights")
    logger.log_artifact(str(outside), "best model", aliases=("best", "latest"))
    assert (run / "artifacts" / "best_model" / "model.bin").read_bytes() == b"weights"
    index = pd.read_csv(run / "artifacts.csv")
    assert index.iloc[0].tolist() == ["best model", "model", "best,latest", "artifacts/best_model"]
    logger.finalize()
    logger.finalize()  # twice is harmless
    assert not list(run.rglob("*.tmp"))


def _interface_methods():
    return [name for name, fn in inspect.getmembers(ExperimentLogger, inspect.isfunction)
            if getattr(fn, "__isabstractmethod__", False)]


@pytest.mark.parametrize("cls", [NoOpLogger, CSVLogger, MultiLogger, WandbLogger, GuardedLogger, TensorBoardLogger,
                                 MlflowLogger])
def test_every_backend_implements_the_whole_interface(cls):
    assert set(_interface_methods()) == {"log_hyperparams", "log_metrics", "log_table", "log_pil_image",
                                         "log_summary", "log_artifact", "finalize"}
    assert not cls.__abstractmethods__


def test_noop_logger_accepts_every_call_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logger = NoOpLogger()
    logger.log_hyperparams({"a": 1})
    logger.log_metrics({"a": 1.0}, step=1)
    logger.log_table("t", pd.DataFrame({"a": [1]}), step=1)
    logger.log_image("i", np.zeros((2, 2, 3), np.uint8), step=1)
    logger.log_summary({"best/x": 1.0})
    logger.log_artifact(str(tmp_path), "x")
    assert logger.backends() == []
    logger.submit(lambda backend: backend.log_dict({"x": 1}, 1))  # a backend's own code: nothing to run it on
    logger.finalize("failed")
    # the raw experiment swallows anything a vendor object would be asked (Lightning's _DummyExperiment)
    assert logger.experiment.log({"a": 1}).define_metric("*", step_metric="x")["k"].finish() is logger.experiment
    assert list(tmp_path.iterdir()) == []


def test_multi_logger_forwards_every_call_to_every_backend(tmp_path):
    a, b = CSVLogger(str(tmp_path / "a")), CSVLogger(str(tmp_path / "b"))
    multi = MultiLogger([a, b])
    multi.log_metrics({"x": 1.5}, step=4)
    multi.log_table("t", pd.DataFrame({"c": [1, 2]}), step=4)
    multi.finalize()
    for run in ("a", "b"):
        assert pd.read_csv(tmp_path / run / "metrics.csv")["x"].tolist() == [1.5]
        assert (tmp_path / run / "tables" / "t-step4.csv").exists()
    assert multi.log_dir == str(tmp_path / "a")


def test_factory_gates_on_the_main_process_and_parses_names(tmp_path):
    assert parse_logger_names("csv, none,csv") == ["csv", "none"]
    with pytest.raises(ValueError, match="unknown logger tensorbord: choose from csv, mlflow, none, tensorboard, "
                                         "wandb"):
        parse_logger_names("csv,tensorbord")
    assert isinstance(build_logger("csv", str(tmp_path / "r"), is_main_process=True).backend, CSVLogger)
    assert isinstance(build_logger("csv", str(tmp_path / "r2"), is_main_process=False), NoOpLogger)
    assert not (tmp_path / "r2").exists()
    assert isinstance(build_logger("none", str(tmp_path / "r3")), NoOpLogger)
    assert isinstance(build_logger("csv,none", str(tmp_path / "r4")).backend, CSVLogger)
    both = build_logger("csv,wandb", str(tmp_path / "r5"), mode="disabled", project="p", unused_option=1)
    assert [type(g.backend).__name__ for g in both.loggers] == ["CSVLogger", "WandbLogger"]
    both.finalize()


class DiskFull(CSVLogger):
    name = "broken-csv"

    def log_metrics(self, metrics, step):
        if step >= 2:
            raise OSError(28, "No space left on device")
        super().log_metrics(metrics, step)


def test_a_failing_backend_is_reported_once_switched_off_and_the_others_go_on(tmp_path, caplog):
    from test_trainer import Toy, loader
    from tracking.guard import GuardedLogger
    from trainer import Trainer

    broken, healthy = GuardedLogger(DiskFull(str(tmp_path / "a"))), GuardedLogger(CSVLogger(str(tmp_path / "b")))
    trainer = Trainer(max_epochs=2, log_every_n_steps=1, logger=MultiLogger([broken, healthy]),
                      enable_progress_bar=False)
    trainer.fit(Toy(), loader(), loader())  # no exception reaches the loop
    trainer.logger.finalize()  # by the logger's owner (the script): it reports what was lost
    assert trainer.global_step == 6
    rows = pd.read_csv(tmp_path / "b" / "metrics.csv")
    assert sorted(set(rows["step"])) == [1, 2, 3, 4, 5, 6] and rows["valid/x"].count() == 2
    assert pd.read_csv(tmp_path / "a" / "metrics.csv")["step"].tolist() == [1]
    failures = [r.message for r in caplog.records if "failed in log_metrics" in r.message]
    assert len(failures) == 1 and "broken-csv" in failures[0] and "No space left on device" in failures[0]
    assert broken.lost_calls == len(rows) - 1  # every row but the first
    assert any("was switched off" in r.message and f"{len(rows) - 1} logging calls were lost" in r.message
               for r in caplog.records)


def test_a_backend_that_cannot_start_is_skipped(tmp_path, caplog, monkeypatch):
    from tracking import factory

    def explode(run_dir, **options):
        raise RuntimeError("service down")

    monkeypatch.setitem(factory.BACKENDS, "wandb", explode)
    logger = build_logger("csv,wandb", str(tmp_path / "r"))
    assert isinstance(logger.backend, CSVLogger)
    assert "the wandb logger could not start (RuntimeError: service down)" in caplog.text


class Hangs(CSVLogger):
    name = "stuck"

    def log_metrics(self, metrics, step):
        if step >= 3:
            time.sleep(30)  # a tracker that stopped answering
        super().log_metrics(metrics, step)


def test_a_hanging_backend_is_switched_off_without_stalling_training(tmp_path, caplog):
    from test_trainer import Toy, loader
    from tracking.guard import GuardedLogger
    from trainer import Trainer

    stuck, healthy = GuardedLogger(Hangs(str(tmp_path / "a")), timeout=1.0), GuardedLogger(CSVLogger(str(tmp_path / "b")))
    start = time.monotonic()
    trainer = Trainer(max_epochs=3, log_every_n_steps=1, logger=MultiLogger([stuck, healthy]), enable_progress_bar=False)
    trainer.fit(Toy(), loader(), loader())
    trainer.logger.finalize()
    assert time.monotonic() - start < 10  # not 30 s a row
    assert trainer.global_step == 9 and sorted(set(pd.read_csv(tmp_path / "b" / "metrics.csv")["step"])) == \
        list(range(1, 10))
    assert any("the stuck logger failed in log_metrics: no answer after 1 s" in r.message for r in caplog.records)
    assert any("stuck logger was switched off" in r.message for r in caplog.records)


def test_guarded_calls_run_in_order_off_the_calling_thread(tmp_path):
    from tracking.guard import GuardedLogger

    threads = []

    class Recording(CSVLogger):
        def log_metrics(self, metrics, step):
            threads.append(threading.current_thread().name)
            super().log_metrics(metrics, step)

    guarded = GuardedLogger(Recording(str(tmp_path)))
    for step in range(1, 51):
        guarded.log_metrics({"x": step / 10}, step)
    assert guarded.state_dict() == {"rows": 50}  # flushed first
    guarded.finalize()
    assert pd.read_csv(tmp_path / "metrics.csv")["step"].tolist() == list(range(1, 51))
    assert set(threads) == {"logger-csv"}


@pytest.mark.parametrize("method, error", [
    ("log_pil_image", OSError(28, "No space left on device")),                   # an image that cannot be written
    ("log_table", PermissionError(13, "Permission denied")),                     # a read-only run folder
    ("log_hyperparams", OSError(28, "No space left on device")),                 # a full disk at start
])
def test_each_injected_fault_costs_only_that_backend(tmp_path, caplog, method, error):
    from models.charts import log_classification_charts
    from tracking.guard import GuardedLogger

    class Faulty(CSVLogger):
        name = "faulty"

    def fail(*args, **kwargs):
        raise error

    faulty = Faulty(str(tmp_path / "a"))
    setattr(faulty, method, fail)
    broken, healthy = GuardedLogger(faulty), GuardedLogger(CSVLogger(str(tmp_path / "b")))
    both = MultiLogger([broken, healthy])
    both.log_hyperparams({"lr": 0.1})
    both.log_metrics({"x": 1.0}, step=1)
    both.log_table("examples", pd.DataFrame({"a": [1]}), step=1)
    log_classification_charts(both, [0, 1], np.array([[0.4, 0.6], [0.3, 0.7]]), ["a", "b"], step=1)
    both.log_metrics({"x": 2.0}, step=2)
    both.finalize()
    both.finalize()  # twice is harmless
    assert pd.read_csv(tmp_path / "b" / "metrics.csv")["x"].tolist() == [1.0, 2.0]
    assert (tmp_path / "b" / "tables" / "Confusion_Matrix-step1.csv").exists()
    assert (tmp_path / "b" / "plots" / "pr-step1.png").exists()
    assert broken.failure.startswith(f"{method}: {type(error).__name__}")
    assert [r.message for r in caplog.records if "failed in" in r.message] == [
        f"tracking: the faulty logger failed in {broken.failure}; it is off for the rest of the run, training goes on"]


@pytest.mark.parametrize("message", ["   ", "\n\n", ""])
def test_an_error_with_a_blank_message_switches_the_backend_off_and_finalize_returns(tmp_path, caplog, message):
    """The first line of such an error was once read as `splitlines()[0]` of nothing: an IndexError in the worker
    thread, which died without marking the call done, so the next flush (a checkpoint, finalize) spun forever."""
    class Blank(CSVLogger):
        name = "blank"

        def log_metrics(self, metrics, step):
            raise ValueError(message)

    guarded = GuardedLogger(Blank(str(tmp_path)), timeout=30)
    guarded.log_metrics({"x": 1.0}, step=1)
    guarded.log_metrics({"x": 2.0}, step=2)
    finished = threading.Event()
    thread = threading.Thread(target=lambda: (guarded.finalize(), finished.set()), daemon=True)
    thread.start()
    assert finished.wait(10), "finalize hung"
    assert guarded.failure == "log_metrics: ValueError" and guarded.lost_calls == 2
    assert "the blank logger failed in log_metrics: ValueError;" in caplog.text


class SlowFigure:
    """A figure that takes `seconds` to draw (a heatmap with a number in each of a million cells), or fails."""

    def __init__(self, seconds: float = 0.0, error: Exception | None = None) -> None:
        self.seconds, self.error = seconds, error

    def savefig(self, buffer, format="png"):
        time.sleep(self.seconds)
        if self.error is not None:
            raise self.error
        Image.new("RGB", (4, 4)).save(buffer, format="png")


@pytest.mark.parametrize("figure, reason", [(SlowFigure(seconds=30), "no answer after 1 s"),
                                            (SlowFigure(error=ValueError("too many cells")), "ValueError")])
def test_a_figure_that_hangs_or_fails_costs_only_the_figures_never_the_record(tmp_path, caplog, figure, reason):
    """Figures are drawn on a lane of their own: while one takes long, or after it failed, metrics, tables and the
    summary are written as they come, and finalize returns promptly."""
    guarded = GuardedLogger(CSVLogger(str(tmp_path)), timeout=1.0)
    start = time.monotonic()
    guarded.log_image("Confusion Matrix", figure, step=1)
    guarded.log_metrics({"valid/x": 0.5}, step=1)
    guarded.log_table("per_class", pd.DataFrame({"class": ["a"], "f1": [0.5]}), step=1)
    guarded.log_summary({"best/valid/x": 0.5})
    guarded.flush()
    guarded.log_image("later", np.zeros((2, 2, 3), np.uint8), step=2)  # figures are off now
    guarded.log_metrics({"valid/x": 0.75}, step=2)
    guarded.finalize()
    assert time.monotonic() - start < 10
    assert pd.read_csv(tmp_path / "metrics.csv")["valid/x"].tolist() == [0.5, 0.75]
    assert (tmp_path / "tables" / "per_class-step1.csv").exists() and (tmp_path / "summary.yaml").exists()
    assert not (tmp_path / "plots").exists()
    assert guarded.failure is None and reason in guarded.figures_failure and guarded.lost_calls == 2
    assert "its figures are off (metrics and tables go on)" in caplog.text


def test_cells_a_spreadsheet_would_run_are_escaped_in_csv_tables_and_read_back_as_logged(tmp_path):
    """Text cells starting with = + - @ are formulas to a spreadsheet (`=HYPERLINK(...)` in a sentence runs when the
    examples table is opened): they are written with a leading ', which spreadsheets show as text; numbers stay."""
    from tracking.files import from_spreadsheet_safe

    logger = CSVLogger(str(tmp_path))
    table = pd.DataFrame({"Sentence": ["=1+1", "+SUM(A1)", "-5 degrees.", "@cmd", "plain", "it's 'quoted'"],
                          "=Label": ["a", "b", "c", "d", "e", "f"], "score": [-0.5, 0.25, 1.0, 2.0, 3.0, 4.0]})
    logger.log_table("examples", table, step=1)
    written = pd.read_csv(tmp_path / "tables" / "examples-step1.csv", keep_default_na=False)
    assert written["Sentence"].tolist() == ["'=1+1", "'+SUM(A1)", "'-5 degrees.", "'@cmd", "plain", "it's 'quoted'"]
    assert list(written.columns) == ["'=Label" if c == "=Label" else c for c in ["Sentence", "=Label", "score"]]
    assert written["score"].tolist() == [-0.5, 0.25, 1.0, 2.0, 3.0, 4.0]  # numbers are not escaped
    pd.testing.assert_frame_equal(from_spreadsheet_safe(written), table)
