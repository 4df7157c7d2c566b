"""Whole training steps captured and replayed (`trainer/step_graph.py`, `--cuda-graphs on`), checked on the CPU with
the "trace" backend: make_fx records the step on real tensors, so a replay runs a fixed list of operations on fixed
tensors with every Python value frozen at capture, as a CUDA graph replay does, and no Python of the step runs.
Compared against eager steps of the same seed: losses, weights, logged metrics, the non-finite-loss watch, exact
resume and the checkpoint format; then when graphs are used at all (`resolve`, `refusal`, train.py's flags)."""
import math
from types import SimpleNamespace

import pytest
import torch

from conftest import tiny_bert
from data import TextClassificationDataModule
from models import SequenceClassifier
from trainer import Callback, NonFiniteLossError, Trainer, seed_everything
from trainer import step_graph
from trainer.checkpoint import STATE_FILE, WEIGHTS_FILE


class Record(Callback):
    """Every step's loss and batch shape, and whether it was replayed."""

    def __init__(self):
        self.values, self.shapes, self.replayed = [], [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.values.append(float(outputs.detach()))
        self.shapes.append(tuple(batch["input_ids"].shape))
        replays = trainer.graphs.replays if trainer.graphs is not None else 0
        self.replayed.append(replays > sum(self.replayed))


class CrashAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


class PoisonAt(Callback):
    """Makes every weight NaN after step `step`: the next step's loss is NaN."""

    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            with torch.no_grad():
                for p in module.parameters():
                    p.fill_(float("nan"))


class Rows:
    """A logger that keeps every row it is given."""
    name = "rows"

    def __init__(self):
        self.rows = []

    def log_metrics(self, metrics, step):
        self.rows.append((step, dict(metrics)))

    def backends(self):
        return []

    def __getattr__(self, name):
        return lambda *args, **kwargs: None


class StepCounting(SequenceClassifier):
    """Counts training_step calls and keeps the epoch's step outputs (training_epoch_end is overridden)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls, self.epoch_losses = 0, []

    def training_step(self, batch, batch_idx):
        self.calls += 1
        return super().training_step(batch, batch_idx)

    def training_epoch_end(self, outputs):
        self.epoch_losses.append([float(o["loss"]) for o in outputs])


def datamodule(tiny_cola, tokenizer, multiple=3, batch_size=5):
    return TextClassificationDataModule(tokenizer, data_dir=str(tiny_cola), batch_size=batch_size, seed=1,
                                        cache_dir=None, pad_to_multiple_of=multiple).setup()


def train(tmp_path, tiny_cola, tokenizer, graphs=None, epochs=2, dropout=0.0, callbacks=(), resume=False,
          save_every=None, precision="32", lr=2e-3):
    seed_everything(1, deterministic=True)
    model = StepCounting(model=tiny_bert(tokenizer), tokenizer=tokenizer, lr=lr)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = dropout
    dm = datamodule(tiny_cola, tokenizer)
    record, rows = Record(), Rows()
    trainer = Trainer(max_epochs=epochs, log_every_n_steps=3, gradient_clip_val=1.0, enable_progress_bar=False,
                      default_root_dir=str(tmp_path), save_every_n_steps=save_every, callbacks=[record, *callbacks],
                      logger=rows, step_graphs=graphs, precision=precision)
    trainer.fit(model, dm.train_dataloader(), dm.val_dataloader(),
                ckpt_path=str(tmp_path / "checkpoints" / "last") if resume else None)
    return SimpleNamespace(model=model, trainer=trainer, record=record, rows=rows.rows)


def test_training_batches_are_padded_to_the_buckets_and_validation_is_not(tiny_cola, tiny_tokenizer):
    dm = datamodule(tiny_cola, tiny_tokenizer)
    lengths = {b["input_ids"].shape[1] for b in dm.train_dataloader()}
    buckets = {-(-len(ids) // 3) * 3 for ids in dm.splits["train"]["input_ids"]}  # each sentence rounded up to 3
    assert lengths and all(n % 3 == 0 for n in lengths) and lengths <= buckets
    assert len(buckets) >= 2  # the tiny sentences (6-8 tokens) span two buckets of 3
    assert any(b["input_ids"].shape[1] % 3 for b in dm.val_dataloader())  # padded to its longest sentence only
    plain = TextClassificationDataModule(tiny_tokenizer, data_dir=str(tiny_cola), batch_size=5, seed=1,
                                         cache_dir=None).setup()
    for padded, unpadded in zip(dm.train_dataloader(), plain.train_dataloader()):  # the same rows, more padding
        assert padded["idx"].tolist() == unpadded["idx"].tolist()
        n = unpadded["input_ids"].shape[1]
        assert torch.equal(padded["input_ids"][:, :n], unpadded["input_ids"])
        assert not padded["attention_mask"][:, n:].any()


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_replayed_steps_give_the_losses_weights_and_metrics_of_eager_steps(tmp_path, tiny_cola, tiny_tokenizer,
                                                                           dropout):
    eager = train(tmp_path / "eager", tiny_cola, tiny_tokenizer, dropout=dropout)
    graphs = train(tmp_path / "graphs", tiny_cola, tiny_tokenizer, graphs="trace", dropout=dropout)
    assert eager.record.shapes == graphs.record.shapes and len(eager.record.values) == 20
    assert sum(graphs.record.replayed) >= 10  # most steps were replays
    assert max(abs(a - b) for a, b in zip(eager.record.values, graphs.record.values)) < 1e-4
    for (name, p), q in zip(eager.model.named_parameters(), graphs.model.parameters()):
        assert torch.allclose(p, q, atol=1e-5), name
    # the rows written: the same steps, names and values (train/loss_step every 3 steps, epoch means, validation)
    assert [(step, sorted(m)) for step, m in eager.rows] == [(step, sorted(m)) for step, m in graphs.rows]
    for (_, a), (_, b) in zip(eager.rows, graphs.rows):
        assert all(math.isclose(a[k], b[k], abs_tol=1e-5) for k in a), (a, b)
    epoch_means = [m["train/loss_epoch"] for _, m in graphs.rows if "train/loss_epoch" in m]
    by_hand = [sum(v * s[0] for v, s in zip(graphs.record.values[i:i + 10], graphs.record.shapes[i:i + 10])) / 48
               for i in (0, 10)]  # 48 rows an epoch: 9 batches of 5 and one of 3
    assert epoch_means == pytest.approx(by_hand, abs=1e-5)
    # the step outputs kept for training_epoch_end are each step's own, not the graph's last
    assert [len(e) for e in graphs.model.epoch_losses] == [10, 10]
    assert sum(graphs.model.epoch_losses, []) == pytest.approx(sum(eager.model.epoch_losses, []), abs=1e-4)
    assert graphs.model.epoch_losses[0] == pytest.approx(graphs.record.values[:10], abs=1e-6)


def test_a_shape_is_captured_the_second_time_an_epoch_meets_it_and_replays_run_no_python(tmp_path, tiny_cola,
                                                                                        tiny_tokenizer):
    run = train(tmp_path, tiny_cola, tiny_tokenizer, graphs="trace", epochs=3)
    shapes, graphs = run.record.shapes, run.trainer.graphs
    per_epoch = [shapes[i:i + 10] for i in range(0, 30, 10)]
    twice = {s for epoch in per_epoch for s in epoch if epoch.count(s) >= 2}
    assert set(graphs.captures) == twice and len(graphs.captures) == len(twice)  # each once, whole run
    short = {s for s in shapes if s[0] < 5}  # the one batch of 3 an epoch stays eager
    assert short and all(s[0] == 5 for s in twice)
    # the first meeting of a shape is eager; from the second on every step of a captured shape is a replay
    expected, captured = [], set()
    for epoch in per_epoch:
        met = {}
        for s in epoch:
            met[s] = met.get(s, 0) + 1
            if s not in captured and met[s] >= 2:
                captured.add(s)
            expected.append(s in captured)
    assert run.record.replayed == expected and graphs.replays == sum(expected)
    # training_step ran for each eager step and twice per capture (the eager run, then the trace), never on replay
    assert run.model.calls == expected.count(False) + 2 * len(graphs.captures)
    assert graphs.summary().startswith(f"step graphs (trace): {len(twice)} shapes captured (")
    # what replays write (the watch, logged values, epoch sums) carries no autograd history from step to step
    written = [run.trainer._bad_loss, *graphs.fixed.values(),
               *(e.total for e in run.trainer._results.epoch.values() if isinstance(e.total, torch.Tensor))]
    assert len(written) >= 5 and all(t.grad_fn is None and not t.requires_grad for t in written)


def test_a_non_finite_loss_in_a_replayed_step_stops_the_run_at_that_step(tmp_path, tiny_cola, tiny_tokenizer):
    with pytest.raises(NonFiniteLossError) as caught:
        train(tmp_path / "graphs", tiny_cola, tiny_tokenizer, graphs="trace", callbacks=[PoisonAt(14)])
    assert caught.value.step == 15 and math.isnan(caught.value.value)
    eager = train(tmp_path / "probe", tiny_cola, tiny_tokenizer, graphs="trace")
    assert eager.record.replayed[14]  # step 15 is a replay in this run: the watch ran inside the graph


def test_resume_is_exact_and_checkpoints_keep_the_eager_format(tmp_path, tiny_cola, tiny_tokenizer):
    full = train(tmp_path / "full", tiny_cola, tiny_tokenizer, graphs="trace", dropout=0.1)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "cut", tiny_cola, tiny_tokenizer, graphs="trace", dropout=0.1, callbacks=[CrashAt(13)],
              save_every=4)
    resumed = train(tmp_path / "cut", tiny_cola, tiny_tokenizer, graphs="trace", dropout=0.1, resume=True,
                    save_every=4)
    assert resumed.trainer.global_step == 20 and resumed.record.values == full.record.values[12:]
    for (name, p), q in zip(full.model.named_parameters(), resumed.model.parameters()):
        assert torch.equal(p, q), name
    train(tmp_path / "eager", tiny_cola, tiny_tokenizer, dropout=0.1, save_every=4)
    graphed, eager = (torch.load(tmp_path / run / "checkpoints" / "last" / STATE_FILE, weights_only=False)
                      for run in ("cut", "eager"))
    assert graphed["global_step"] == eager["global_step"] == 20
    for a, b in zip(graphed["optimizer"]["param_groups"], eager["optimizer"]["param_groups"]):
        assert a.keys() == b.keys() and type(a["lr"]) is float and a["lr"] == b["lr"] and a["capturable"] is False
    assert graphed["results"]["epoch"].keys() == eager["results"]["epoch"].keys()
    from safetensors import safe_open

    with safe_open(str(tmp_path / "cut" / "checkpoints" / "last" / WEIGHTS_FILE), framework="pt") as f:
        assert set(f.keys()) <= set(full.model.state_dict())


def test_bf16_autocast_steps_are_captured_too(tmp_path, tiny_cola, tiny_tokenizer):
    eager = train(tmp_path / "eager", tiny_cola, tiny_tokenizer, precision="bf16")
    graphs = train(tmp_path / "graphs", tiny_cola, tiny_tokenizer, graphs="trace", precision="bf16")
    assert sum(graphs.record.replayed) >= 10
    assert max(abs(a - b) for a, b in zip(eager.record.values, graphs.record.values)) < 2e-2  # bf16 rounding


class ReadsTheLoss(SequenceClassifier):
    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        if loss.item() > 100:  # a host read: no graph can hold it
            self.print("large loss")
        return loss


class ClipsItself(Callback):
    def on_before_optimizer_step(self, trainer, module, optimizer):
        pass


def test_what_cannot_be_captured_is_said_in_a_line(tmp_path, tiny_cola, tiny_tokenizer):
    seed_everything(1)
    dm = datamodule(tiny_cola, tiny_tokenizer)
    model = ReadsTheLoss(model=tiny_bert(tiny_tokenizer), tokenizer=tiny_tokenizer)
    trainer = Trainer(max_epochs=1, enable_progress_bar=False, default_root_dir=str(tmp_path), step_graphs="trace")
    with pytest.raises(RuntimeError, match=r"capturing the training step of 5x\d+ failed .*must not read a value "
                                           r"back to the host.*or train without step graphs"):
        trainer.fit(model, dm.train_dataloader())
    for kwargs, words in [({"accumulate_grad_batches": 2}, "need accumulate_grad_batches=1"),
                          ({"callbacks": [ClipsItself()]}, "cannot run on_before_optimizer_step (ClipsItself)")]:
        trainer = Trainer(max_epochs=1, enable_progress_bar=False, default_root_dir=str(tmp_path),
                          step_graphs="trace", **kwargs)
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            trainer.fit(SequenceClassifier(model=tiny_bert(tiny_tokenizer), tokenizer=tiny_tokenizer),
                        dm.train_dataloader())
    with pytest.raises(ValueError, match="step_graphs must be one of cuda, trace, auto or None"):
        Trainer(step_graphs="on")


@pytest.mark.parametrize("device, break_even, steps, refused, expected", [
    ("cuda", None, 10**6, None, None),  # not measured: auto stays eager however long the run
    ("cuda", 500, 499, None, None),
    ("cuda", 500, 500, None, "cuda"),
    ("cpu", 500, 10**6, None, None),  # never on a CPU
    ("cuda", 500, 10**6, "graph steps need --accumulate-grad-batches 1", None),
])
def test_auto_captures_on_a_gpu_once_a_run_has_the_break_even_steps(monkeypatch, device, break_even, steps,
                                                                    refused, expected):
    monkeypatch.setattr(step_graph, "BREAK_EVEN_STEPS", break_even)
    monkeypatch.setattr(step_graph, "refusal", lambda trainer: refused)
    trainer = SimpleNamespace(accelerator=SimpleNamespace(device=torch.device(device)),
                              estimated_stepping_batches=steps)
    assert step_graph.resolve("auto", trainer) == expected
    assert step_graph.resolve("trace", trainer) == "trace" and step_graph.resolve(None, trainer) is None


@pytest.mark.parametrize("cuda, world_size, extra, break_even, expected", [
    (True, None, [], None, None),  # auto: not measured, so the trainer is not even asked (eager, as before)
    (True, None, [], 300, "auto"),  # once measured, the trainer decides by the run's steps
    (True, None, ["--cuda-graphs", "on"], None, "cuda"),
    (True, None, ["--cuda-graphs", "off"], 300, None),
    (False, None, [], 300, None),  # never on a CPU
    (True, "2", [], 300, None),  # several processes: not verified, so eager
    (True, None, ["--accumulate-grad-batches", "2"], 300, None),
    (True, None, ["--compile"], 300, None),
    (True, None, ["--precision", "16"], 300, None),
])
def test_cuda_graphs_flag_chooses_what_the_trainer_gets(monkeypatch, cuda, world_size, extra, break_even, expected):
    from recipes import train as recipe

    monkeypatch.setattr(step_graph, "BREAK_EVEN_STEPS", break_even)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    if world_size is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", world_size)
    assert recipe.step_graphs(recipe.build_parser().parse_args(extra)) == expected
    assert recipe.graph_padding(expected) == (16 if expected in ("cuda", "auto") else None)


@pytest.mark.parametrize("args, fragment", [
    (["--accumulate-grad-batches", "2"], "--cuda-graphs on needs --accumulate-grad-batches 1"),
    (["--compile"], "--cuda-graphs on captures the eager training step; leave out --compile"),
    (["--precision", "16"], "--cuda-graphs on does not run with --precision 16"),
])
def test_cuda_graphs_on_is_refused_where_graphs_cannot_work(monkeypatch, args, fragment):
    from recipes import cli, train as recipe

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(cli.UsageError, match=fragment.replace("-", r"\-")):
        recipe.step_graphs(recipe.build_parser().parse_args(["--cuda-graphs", "on", *args]))


def test_train_refuses_cuda_graphs_on_without_a_gpu_in_one_line(tmp_path, tiny_cola, tiny_model_dir):
    from conftest import assert_one_line_error, run_script

    result = run_script("train.py", "--model", str(tiny_model_dir), "--data-dir", str(tiny_cola), "--cuda-graphs",
                        "on", "--output-dir", str(tmp_path / "runs"), cwd=tmp_path)
    assert_one_line_error(result, "--cuda-graphs on needs a CUDA GPU, and none is visible")
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


class FakeCuda:
    """Stands in for torch.cuda's stream and graph API on a CPU, to run the "cuda" backend's own code: a graph
    records the function captured under it, and its replay calls that function again (eagerly: what is checked is
    the sequence around it, warm-up runs, the capture and putting back what they changed)."""

    def __init__(self):
        self.calls, self.capturing = [], None

    def install(self, monkeypatch):
        import contextlib

        fake = self

        class Stream:
            def wait_stream(self, other):
                fake.calls.append("wait")

        class CUDAGraph:
            def replay(self):
                fake.calls.append("replay")
                self.fn()

        @contextlib.contextmanager
        def graph(g, capture_error_mode="global"):
            fake.calls.append(f"capture:{capture_error_mode}")
            fake.capturing = g
            yield
            fake.capturing = None

        monkeypatch.setattr(torch.cuda, "Stream", Stream)
        monkeypatch.setattr(torch.cuda, "current_stream", lambda: Stream())
        monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
        monkeypatch.setattr(torch.cuda, "CUDAGraph", CUDAGraph)
        monkeypatch.setattr(torch.cuda, "graph", graph)
        monkeypatch.setattr(torch.cuda, "is_current_stream_capturing", lambda: fake.capturing is not None)
        return fake


def test_the_cuda_backend_warms_up_captures_and_puts_everything_back(monkeypatch, tmp_path, tiny_cola,
                                                                     tiny_tokenizer):
    fake = FakeCuda().install(monkeypatch)
    original = step_graph._capture_cuda

    def capture(fn, warmup=2):
        def recorded():
            if fake.capturing is not None:
                fake.capturing.fn = fn
            fn()
        return original(recorded, warmup)

    monkeypatch.setattr(step_graph, "_capture_cuda", capture)
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    eager = train(tmp_path / "eager", tiny_cola, tiny_tokenizer, dropout=0.1)
    steps = []  # (capturing, every group capturable, every learning rate a tensor) at each optimizer step
    hook = register_optimizer_step_pre_hook(lambda opt, args, kwargs: steps.append((
        fake.capturing is not None, all(g["capturable"] for g in opt.param_groups),
        all(isinstance(g["lr"], torch.Tensor) for g in opt.param_groups))))
    try:
        graphs = train(tmp_path / "cuda", tiny_cola, tiny_tokenizer, graphs="cuda", dropout=0.1)
    finally:
        hook.remove()
    # capturable only under capture (torch warns when a capturable optimizer steps uncaptured); tensor learning
    # rates in every run of the captured step; floats in eager steps
    assert {(c, cap) for c, cap, _ in steps} == {(True, True), (False, False)}
    assert sum(tensor_lr for _, _, tensor_lr in steps) == 4 * len(graphs.trainer.graphs.captures) + \
        graphs.trainer.graphs.replays
    captures = len(graphs.trainer.graphs.captures)
    assert captures >= 1 and fake.calls.count("capture:thread_local") == captures
    assert fake.calls.count("replay") == graphs.trainer.graphs.replays == sum(graphs.record.replayed) >= 10
    # each capture: one eager run, two warm-up runs on the side stream, the captured run; then replays only
    assert graphs.model.calls == graphs.record.replayed.count(False) + 4 * captures + graphs.trainer.graphs.replays
    # the three extra runs a capture makes were undone: the same losses (dropout draws included) and weights
    assert max(abs(a - b) for a, b in zip(eager.record.values, graphs.record.values)) < 1e-4
    for (name, p), q in zip(eager.model.named_parameters(), graphs.model.parameters()):
        assert torch.allclose(p, q, atol=1e-5), name
