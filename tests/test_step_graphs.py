"""Training steps replayed as graphs (`SequenceClassifier.use_step_graphs`, `--cuda-graphs`), checked on the CPU: padded
lengths from a few buckets, one compilation per bucket over a whole epoch, the losses of eager steps, checkpoints of
the same format, and exact resume. On a CPU no CUDA graph is captured: the compiled code is what is tested here, with
torch's `aot_eager` backend (forward and backward traced as the CUDA path traces them, without code generation)."""
import pytest
import torch

from conftest import tiny_bert
from data import TextClassificationDataModule
from models import SequenceClassifier
from trainer import Callback, Trainer, seed_everything
from trainer.checkpoint import WEIGHTS_FILE


class CountingBackend:
    """A torch.compile backend that counts the graphs it is given, then runs them as `aot_eager` does."""

    def __init__(self):
        self.shapes = []

    def __call__(self, gm, example_inputs):
        from torch._dynamo.backends.debugging import aot_eager

        self.shapes.append(next(tuple(t.shape) for t in example_inputs if isinstance(t, torch.Tensor) and t.dim() == 2))
        return aot_eager(gm, example_inputs)


class Losses(Callback):
    def __init__(self):
        self.values, self.shapes = [], []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.values.append(float(outputs.detach()))
        self.shapes.append(tuple(batch["input_ids"].shape))


class CrashAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            raise KeyboardInterrupt


def datamodule(tiny_cola, tokenizer, multiple=3, batch_size=5):
    return TextClassificationDataModule(tokenizer, data_dir=str(tiny_cola), batch_size=batch_size, seed=1, cache_dir=None,
                          pad_to_multiple_of=multiple).setup()


def train(tmp_path, tiny_cola, tokenizer, backend=None, epochs=1, dropout=0.0, crash_at=None, resume=False,
          save_every=None):
    torch._dynamo.reset()
    seed_everything(1, deterministic=True)
    model = SequenceClassifier(model=tiny_bert(tokenizer), tokenizer=tokenizer, lr=2e-3)
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = dropout
    dm = datamodule(tiny_cola, tokenizer)
    if backend is not None:
        model.use_step_graphs(dm.batch_size, backend=backend, lengths=dm.train_shapes())
    losses = Losses()
    callbacks = [losses] + ([CrashAt(crash_at)] if crash_at else [])
    trainer = Trainer(max_epochs=epochs, log_every_n_steps=3, gradient_clip_val=1.0, enable_progress_bar=False,
                      default_root_dir=str(tmp_path), save_every_n_steps=save_every, callbacks=callbacks)
    trainer.fit(model, dm.train_dataloader(), dm.val_dataloader(),
                ckpt_path=str(tmp_path / "checkpoints" / "last") if resume else None)
    return model, trainer, losses


def test_training_batches_are_padded_to_the_buckets_and_validation_is_not(tiny_cola, tiny_tokenizer):
    dm = datamodule(tiny_cola, tiny_tokenizer)
    lengths = {b["input_ids"].shape[1] for b in dm.train_dataloader()}
    assert lengths and all(n % 3 == 0 for n in lengths) and lengths <= set(dm.train_shapes())
    assert len(dm.train_shapes()) >= 2  # the tiny sentences (6-8 tokens) span two buckets of 3
    assert any(b["input_ids"].shape[1] % 3 for b in dm.val_dataloader())  # padded to its longest sentence only
    plain = TextClassificationDataModule(tiny_tokenizer, data_dir=str(tiny_cola), batch_size=5, seed=1, cache_dir=None).setup()
    for padded, unpadded in zip(dm.train_dataloader(), plain.train_dataloader()):  # the same rows, more padding
        assert padded["idx"].tolist() == unpadded["idx"].tolist()
        n = unpadded["input_ids"].shape[1]
        assert torch.equal(padded["input_ids"][:, :n], unpadded["input_ids"])
        assert not padded["attention_mask"][:, n:].any()


def test_one_compilation_per_bucket_over_whole_epochs(tmp_path, tiny_cola, tiny_tokenizer):
    backend = CountingBackend()
    _, trainer, losses = train(tmp_path, tiny_cola, tiny_tokenizer, backend=backend, epochs=2)
    buckets = datamodule(tiny_cola, tiny_tokenizer).train_shapes()
    # every bucket compiled once, before the first step; validation and the short last batch stay eager
    assert sorted(backend.shapes) == [(5, n) for n in buckets] and len(buckets) == 2
    assert {shape for shape in losses.shapes if shape[0] == 5} <= set(backend.shapes)
    assert trainer.global_step == 20 and any(shape[0] < 5 for shape in losses.shapes)


def test_graph_steps_give_the_losses_of_eager_steps(tmp_path, tiny_cola, tiny_tokenizer):
    model, _, eager = train(tmp_path / "eager", tiny_cola, tiny_tokenizer, epochs=2)
    graphed, _, compiled = train(tmp_path / "graphs", tiny_cola, tiny_tokenizer, backend="aot_eager", epochs=2)
    assert eager.shapes == compiled.shapes and len(eager.values) == 20
    assert max(abs(a - b) for a, b in zip(eager.values, compiled.values)) < 1e-4
    for (name, p), q in zip(model.named_parameters(), graphed.parameters()):
        assert torch.allclose(p, q, atol=1e-4), name


def test_checkpoints_keep_their_format_and_resume_exactly(tmp_path, tiny_cola, tiny_tokenizer):
    from safetensors import safe_open

    full, _, full_losses = train(tmp_path / "full", tiny_cola, tiny_tokenizer, backend="aot_eager", epochs=2,
                                 dropout=0.1)
    with pytest.raises(KeyboardInterrupt):
        train(tmp_path / "cut", tiny_cola, tiny_tokenizer, backend="aot_eager", epochs=2, dropout=0.1, crash_at=13,
              save_every=4)
    resumed, trainer, resumed_losses = train(tmp_path / "cut", tiny_cola, tiny_tokenizer, backend="aot_eager",
                                             epochs=2, dropout=0.1, resume=True, save_every=4)
    assert trainer.global_step == 20 and resumed_losses.values == full_losses.values[12:]
    for (name, p), q in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(p, q), name
    with safe_open(str(tmp_path / "cut" / "checkpoints" / "last" / WEIGHTS_FILE), framework="pt") as f:
        assert set(f.keys()) <= set(SequenceClassifier(model=tiny_bert(tiny_tokenizer), tokenizer=tiny_tokenizer).state_dict())


@pytest.mark.parametrize("args, fragment", [
    (["--accumulate-grad-batches", "2"], "--cuda-graphs on needs --accumulate-grad-batches 1"),
    (["--compile"], "--cuda-graphs on compiles the training step itself; leave out --compile"),
])
def test_train_refuses_graphs_with_what_they_cannot_do(tmp_path, tiny_cola, tiny_model_dir, args, fragment):
    from conftest import assert_one_line_error, run_script

    result = run_script("train.py", "--model", str(tiny_model_dir), "--data-dir", str(tiny_cola), "--cuda-graphs",
                        "on", "--output-dir", str(tmp_path / "runs"), *args, cwd=tmp_path)
    assert_one_line_error(result, fragment)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


@pytest.mark.parametrize("cuda, world_size, extra, expected", [
    (True, None, [], None),  # off by default, even with one GPU: on an H200 graphs made the default run slower
    (True, None, ["--cuda-graphs", "on"], "cudagraphs"),
    (False, None, [], None),  # never on a CPU unless asked
    (True, "2", [], None),  # accelerate launch with several processes: not measured, so off
    (True, None, ["--accumulate-grad-batches", "2"], None),
    (True, None, ["--compile"], None),
    (False, None, ["--cuda-graphs", "inductor"], "inductor"),
])
def test_cuda_graphs_auto_is_off_and_on_is_refused_where_graphs_cannot_work(monkeypatch, cuda, world_size, extra,
                                                                            expected):
    from recipes import train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    if world_size is None:
        monkeypatch.delenv("WORLD_SIZE", raising=False)
    else:
        monkeypatch.setenv("WORLD_SIZE", world_size)
    assert train.step_graphs(train.build_parser().parse_args(extra)) == expected
