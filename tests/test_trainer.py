"""The loop: hook order, `self.log` names and means, gradient accumulation, modes, stopping and checkpoints.
A toy regression module on ten fixed points keeps every number computable by hand."""
import copy

import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tracking import CSVLogger
from trainer import Callback, EarlyStopping, ModelCheckpoint, Pruning, Trainer, TrainerModule

X = torch.arange(10, dtype=torch.float32).unsqueeze(1)  # x = 0..9, mean 4.5
Y = 2 * X + 1


def loader(batch_size=4, n=10):
    return DataLoader(TensorDataset(X[:n], Y[:n]), batch_size=batch_size, shuffle=False)


class Toy(TrainerModule):
    def __init__(self, record=None, valid_losses=None, lr=0.01, dropout=0.5):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(1, 1))
        self.record = record if record is not None else []
        self.valid_losses, self.lr = valid_losses, lr
        self.modes = []

    def training_step(self, batch, batch_idx):
        self.record.append("training_step")
        self.modes.append(("train", self.training, self.net[0].training))
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("train/loss", loss, on_epoch=True)
        self.log("train/x", x.mean(), on_epoch=True)  # epoch value: the batch-size-weighted mean = mean of all x
        self.log("train/first_x", x[0, 0])  # training_step default: on_step only
        return loss

    def validation_step(self, batch, batch_idx):
        self.record.append("validation_step")
        self.modes.append(("valid", self.training, self.net[0].training))
        x, y = batch
        self.log("valid/x", x.mean())  # validation default: on_epoch only
        self.log("valid/x_both", x.mean(), on_step=True)
        if self.valid_losses is not None:
            self.log("valid/loss", self.valid_losses[self.current_epoch], batch_size=1)
        return {"x": x}

    def training_epoch_end(self, outputs):
        self.record.append("training_epoch_end")
        self.train_outputs = outputs

    def validation_epoch_end(self, outputs):
        self.record.append("validation_epoch_end")

    def on_train_epoch_start(self):
        self.record.append("module.on_train_epoch_start")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class Recorder(Callback):
    def __init__(self, record):
        self.record = record


for _hook in [name for name in vars(Callback) if name.startswith("on_")]:
    setattr(Recorder, _hook, lambda self, trainer, module, *args, _h=_hook: self.record.append(_h))


def test_hook_order(tmp_path):
    record = []
    module = Toy(record)
    trainer = Trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, callbacks=[Recorder(record)],
                      enable_progress_bar=False, default_root_dir=str(tmp_path))
    trainer.fit(module, loader(), loader())
    batch = ["on_train_batch_start", "training_step", "on_before_optimizer_step", "on_train_batch_end"]
    assert record == [
        "on_fit_start", "on_train_start",
        "module.on_train_epoch_start", "on_train_epoch_start",
        *batch, *batch,
        "training_epoch_end", "on_train_epoch_end",
        "on_validation_start", "on_validation_epoch_start",
        "on_validation_batch_start", "validation_step", "on_validation_batch_end",
        "validation_epoch_end", "on_validation_epoch_end", "on_validation_end",
        "on_train_end", "on_fit_end",
    ]


def test_log_names_weighted_means_and_step_rows(tmp_path):
    logger = CSVLogger(str(tmp_path / "run"))
    module = Toy()
    trainer = Trainer(max_epochs=2, log_every_n_steps=2, logger=logger, enable_progress_bar=False)
    trainer.fit(module, loader(batch_size=4), loader(batch_size=3))
    frame = pd.read_csv(tmp_path / "run" / "metrics.csv")

    steps = frame.dropna(subset=["train/first_x"])
    # 3 batches (sizes 4, 4, 2) per epoch; rows at global steps 2, 4, 6 carry the batch that made that step
    assert steps["step"].tolist() == [2, 4, 6]
    assert steps["train/first_x"].tolist() == [4.0, 0.0, 8.0]
    assert steps["epoch"].tolist() == [0, 1, 1]
    assert steps["train/x_step"].tolist() == [(4 + 5 + 6 + 7) / 4, (0 + 1 + 2 + 3) / 4, (8 + 9) / 2]

    epochs = frame.dropna(subset=["train/x_epoch"])
    # weighted by batch size: 4.5 (the mean of 0..9); an unweighted mean of batch means would give 5.1667
    assert epochs["train/x_epoch"].tolist() == pytest.approx([4.5, 4.5])
    assert epochs["step"].tolist() == [3, 6]
    assert "train/x" not in frame.columns and "train/loss" not in frame.columns

    valid = frame.dropna(subset=["valid/x"])
    assert valid["valid/x"].tolist() == pytest.approx([4.5, 4.5])  # batches of 3, 3, 3, 1
    assert valid["valid/x_both_epoch"].tolist() == pytest.approx([4.5, 4.5])
    # on_step in validation: written every log_every_n_steps validation batches: batch 2 (3, 4, 5) and batch 4 (9)
    assert frame["valid/x_both_step"].dropna().tolist() == [4.0, 9.0, 4.0, 9.0]
    assert trainer.callback_metrics["valid/x_both"] == pytest.approx(4.5)
    assert len(module.train_outputs) == 3 and all(o["loss"].shape == () for o in module.train_outputs)
    assert not any(o["loss"].requires_grad for o in module.train_outputs)


@pytest.mark.parametrize("n_batches, accumulate, limit, expected", [(10, 4, None, 3), (10, 4, 6, 2), (10, 1, None, 10),
                                                                   (9, 3, None, 3)])
def test_optimizer_steps_under_gradient_accumulation(n_batches, accumulate, limit, expected):
    steps = []

    class Count(Callback):
        def on_before_optimizer_step(self, trainer, module, optimizer):
            steps.append(trainer.global_step)

    trainer = Trainer(max_epochs=1, accumulate_grad_batches=accumulate, limit_train_batches=limit,
                      callbacks=[Count()], enable_progress_bar=False)
    trainer.fit(Toy(dropout=0.0), loader(batch_size=1, n=n_batches))
    assert trainer.global_step == expected
    assert steps == list(range(expected))
    assert trainer.estimated_stepping_batches == expected


def test_accumulated_gradient_is_the_mean_of_the_micro_batch_gradients():
    module = Toy(dropout=0.0, lr=0.1)
    reference = copy.deepcopy(module.net)
    grads = []
    for i in (0, 2):
        reference.zero_grad()
        torch.nn.functional.mse_loss(reference(X[i:i + 2]), Y[i:i + 2]).backward()
        grads.append([p.grad.clone() for p in reference.parameters()])
    expected = [p.detach() - 0.1 * (g0 + g1) / 2 for p, g0, g1 in zip(reference.parameters(), *grads)]

    trainer = Trainer(max_epochs=1, accumulate_grad_batches=2, enable_progress_bar=False)
    trainer.fit(module, loader(batch_size=2, n=4))
    assert trainer.global_step == 1
    for got, want in zip(module.net.parameters(), expected):
        torch.testing.assert_close(got.detach().cpu(), want)


def test_train_mode_during_training_even_from_an_eval_mode_model():
    module = Toy()
    module.eval()  # transformers' from_pretrained returns eval mode
    trainer = Trainer(max_epochs=2, limit_train_batches=2, limit_val_batches=1, enable_progress_bar=False)
    trainer.fit(module, loader(), loader())
    assert module.modes == [("train", True, True)] * 2 + [("valid", False, False)] + \
        [("train", True, True)] * 2 + [("valid", False, False)]


def test_max_steps_stops_mid_epoch_and_still_validates():
    record = []
    trainer = Trainer(max_epochs=5, max_steps=4, enable_progress_bar=False)
    trainer.fit(Toy(record), loader(), loader())
    assert trainer.global_step == 4 and trainer.current_epoch == 1
    assert record.count("training_step") == 4 and record.count("validation_epoch_end") == 2


def test_early_stopping_after_patience_validations_without_improvement():
    stopper = EarlyStopping(monitor="valid/loss", patience=2)
    module = Toy(valid_losses=[1.0, 0.5, 0.6, 0.7, 0.1, 0.1])
    trainer = Trainer(max_epochs=6, limit_train_batches=1, callbacks=[stopper], enable_progress_bar=False)
    trainer.fit(module, loader(), loader())
    assert trainer.current_epoch == 3 and trainer.global_step == 4
    assert stopper.best_score == 0.5 and stopper.wait_count == 2 and stopper.stopped_step == 4


class FakeTrial:
    """What `Pruning` needs of an Optuna trial: it says prune once a reported value exceeds `limit`."""

    def __init__(self, limit):
        self.limit, self.reported = limit, []

    def report(self, value, step):
        self.reported.append((step, value))

    def should_prune(self):
        return self.reported[-1][1] > self.limit


def test_pruning_reports_each_validation_and_asks_the_trainer_to_stop(tmp_path):
    trial = FakeTrial(limit=0.8)
    pruning = Pruning(trial, monitor="valid/loss")
    trainer = Trainer(max_epochs=5, limit_train_batches=1, callbacks=[pruning], enable_progress_bar=False,
                      logger=CSVLogger(str(tmp_path)))
    trainer.fit(Toy(valid_losses=[0.5, 0.7, 0.9, 0.1, 0.1]), loader(), loader())
    assert trial.reported == [(0, 0.5), (1, pytest.approx(0.7)), (2, pytest.approx(0.9))]
    assert trainer.current_epoch == 2 and trainer.global_step == 3  # stopped after the third validation
    assert pruning.pruned_epoch == 2 and pruning.stop_status == "pruned"
    trainer.logger.finalize()
    summary = __import__("yaml").safe_load((tmp_path / "summary.yaml").read_text())
    assert summary["pruned"] is True and summary["pruned/epoch"] == 2 and summary["pruned/step"] == 3
    assert summary["pruned/valid/loss"] == pytest.approx(0.9)

    kept = Pruning(FakeTrial(limit=1.0), monitor="valid/loss")
    Trainer(max_epochs=3, limit_train_batches=1, callbacks=[kept], enable_progress_bar=False).fit(
        Toy(valid_losses=[0.5, 0.7, 0.9]), loader(), loader())
    assert kept.stop_status is None and sorted(kept.values) == [0, 1, 2]


def test_model_checkpoint_keeps_the_best_weights(tmp_path):
    from safetensors.torch import load_file

    saved = {}

    class Snapshot(Callback):
        def on_validation_end(self, trainer, module):
            saved[trainer.current_epoch] = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

    checkpoint = ModelCheckpoint(monitor="valid/loss", mode="min")
    trainer = Trainer(max_epochs=3, limit_train_batches=1, callbacks=[checkpoint, Snapshot()],
                      default_root_dir=str(tmp_path), enable_progress_bar=False)
    trainer.fit(Toy(valid_losses=[3.0, 1.0, 2.0]), loader(), loader())
    assert checkpoint.best_score == 1.0 and checkpoint.best_step == 2
    assert checkpoint.best_model_path == str(tmp_path / "checkpoints" / "best")
    weights = load_file(tmp_path / "checkpoints" / "best" / "model.safetensors")
    assert weights.keys() == saved[1].keys()
    for key in weights:
        torch.testing.assert_close(weights[key], saved[1][key])
    assert checkpoint.best_metrics["valid/loss"] == 1.0
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best"]  # no .tmp/.old left


def test_a_monitor_that_was_never_logged_is_named():
    trainer = Trainer(max_epochs=1, limit_train_batches=1, callbacks=[EarlyStopping(monitor="valid/mcc")],
                      enable_progress_bar=False)
    with pytest.raises(KeyError, match="monitors 'valid/mcc', which was not logged .*valid/x"):
        trainer.fit(Toy(), loader(), loader())


def test_log_outside_a_hook_is_an_error():
    module = Toy()
    Trainer(enable_progress_bar=False)._attach(module)
    with pytest.raises(RuntimeError, match="only available inside a hook"):
        module.log("x", 1.0)


def test_validate_and_test_run_the_evaluation_loop_alone():
    record = []

    class WithTest(Toy):
        def test_step(self, batch, batch_idx):
            record.append("test_step")
            self.log("test/x", batch[0].mean())

        def test_epoch_end(self, outputs):
            record.append("test_epoch_end")

    trainer = Trainer(callbacks=[Recorder(record)], enable_progress_bar=False)
    assert trainer.test(WithTest(record), loader(batch_size=3)) == pytest.approx({"test/x": 4.5})
    assert record == ["on_test_start", "on_test_epoch_start"] + \
        ["on_test_batch_start", "test_step", "on_test_batch_end"] * 4 + \
        ["test_epoch_end", "on_test_epoch_end", "on_test_end"]
    metrics = trainer.validate(trainer.module, loader(batch_size=4))
    assert metrics["valid/x"] == pytest.approx(4.5) and trainer.global_step == 0


def test_a_non_finite_loss_stops_training_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    from safetensors.torch import load_file

    from trainer import NonFiniteLossError

    class Diverges(Toy):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("nan") if self.global_step == 3 else loss  # the batch that makes step 4

    checkpoint = ModelCheckpoint(monitor="valid/x")
    trainer = Trainer(max_epochs=3, log_every_n_steps=2, callbacks=[checkpoint], default_root_dir=str(tmp_path),
                      enable_progress_bar=False)
    with pytest.raises(NonFiniteLossError, match="the training loss became nan at step 4"):
        trainer.fit(Diverges(dropout=0.0), loader(), loader())
    assert trainer.global_step == 4 and checkpoint.best_step == 3
    weights = load_file(tmp_path / "checkpoints" / "best" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_no_checkpoint_is_written_after_a_non_finite_loss_between_two_rows(tmp_path):
    """Rows every 5 steps, resumable checkpoints every 3: the loss turns NaN at step 4, before any row notices it.
    The step-6 checkpoint must not be written over the step-3 one."""
    from safetensors.torch import load_file

    from trainer import NonFiniteLossError
    from trainer.checkpoint import load_state

    class Diverges(Toy):
        def training_step(self, batch, batch_idx):
            loss = super().training_step(batch, batch_idx)
            return loss * float("nan") if self.global_step == 3 else loss

    trainer = Trainer(max_epochs=1, log_every_n_steps=5, save_every_n_steps=3, default_root_dir=str(tmp_path),
                      enable_progress_bar=False)
    with pytest.raises(NonFiniteLossError, match="became nan at step 4"):
        trainer.fit(Diverges(dropout=0.0), loader(batch_size=1), loader())
    last = tmp_path / "checkpoints" / "last"
    assert load_state(last)["global_step"] == 3 and trainer.last_state_step == 3
    assert trainer.last_state_path == str(last)
    assert trainer.global_step == 5  # the row at step 5 noticed it; the checkpoint at step 6 never came
    assert all(torch.isfinite(w).all() for w in load_file(last / "model.safetensors").values())


def test_fit_then_test_log_to_one_open_logger_finalized_by_its_owner(tmp_path):
    """The trainer never finalizes the logger: fit, then test, then the owner's finalize (twice is harmless)."""
    import threading

    from tracking import build_logger

    logger = build_logger("csv", str(tmp_path))

    class WithTest(Toy):
        def test_step(self, batch, batch_idx):
            x, y = batch
            self.log("test/loss", torch.nn.functional.mse_loss(self.net(x), y))

    trainer = Trainer(max_epochs=1, logger=logger, default_root_dir=str(tmp_path), enable_progress_bar=False)
    module = WithTest(dropout=0.0)
    done = threading.Event()

    def run():
        trainer.fit(module, loader(), loader())
        trainer.test(module, loader())
        logger.finalize()
        logger.finalize()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(60), "fit then test then finalize did not return"
    frame = pd.read_csv(tmp_path / "metrics.csv")
    assert frame["test/loss"].notna().sum() == 1 and frame["valid/x"].notna().sum() == 1


def test_bf16_mixed_precision_runs_the_steps_under_autocast():
    dtypes = []

    class Probe(Toy):
        def training_step(self, batch, batch_idx):
            dtypes.append(self.net[1](batch[0]).dtype)  # a Linear inside the step: bf16 under autocast
            return super().training_step(batch, batch_idx)

    module = Probe(dropout=0.0)
    trainer = Trainer(max_epochs=1, precision="bf16", enable_progress_bar=False)
    trainer.fit(module, loader())
    assert dtypes == [torch.bfloat16] * 3
    assert module.net[1].weight.dtype == torch.float32  # weights stay fp32
    assert trainer.global_step == 3 and all(torch.isfinite(p).all() for p in module.parameters())


def test_progress_bar_moves_every_log_every_n_steps_batches(monkeypatch):
    import tqdm.auto

    bars = []

    class Bar:
        def __init__(self, total, initial=0, **kwargs):
            self.total, self.n, self.updates = total, initial, []
            bars.append(self)

        def update(self, n):
            self.n += n
            self.updates.append(n)

        def set_postfix(self, *args, **kwargs):
            pass

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    trainer = Trainer(max_epochs=2, log_every_n_steps=4, enable_progress_bar=True)
    trainer.fit(Toy(), loader(batch_size=1))  # 10 batches an epoch
    assert [bar.updates for bar in bars] == [[4, 4, 2], [4, 4, 2]]
    assert [bar.n for bar in bars] == [10, 10]

    bars.clear()
    trainer = Trainer(max_steps=6, log_every_n_steps=4, enable_progress_bar=True)
    trainer.fit(Toy(), loader(batch_size=1))
    assert [bar.updates for bar in bars] == [[4, 2]]  # stopped after 6 of 10 batches: the bar says 6


def test_seed_everything_makes_cublas_deterministic_and_only_warns_on_the_rest(monkeypatch):
    from trainer import seed_everything

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        seed_everything(3, deterministic=True)
        import os

        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        first = torch.rand(3)
        seed_everything(3)
        torch.testing.assert_close(torch.rand(3), first)
    finally:
        torch.use_deterministic_algorithms(False)
