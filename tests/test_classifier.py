"""models/classifier.py and callbacks.py: `SequenceClassifier` (the seed's `ColaModel`), its metrics and the
misclassified-examples table, checked against scikit-learn on an independent forward pass."""
import numpy as np
import pandas as pd
import pytest
import torch
from sklearn import metrics as skm

from conftest import tiny_bert
from data import TextClassificationDataModule
from models import MisclassifiedExamples, Predictor, SequenceClassifier
from tracking import CSVLogger
from trainer import Callback, ModelCheckpoint, Trainer, seed_everything


class DropoutWatch(Callback):
    def __init__(self):
        self.seen = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        dropouts = [m.training for m in module.model.modules() if isinstance(m, torch.nn.Dropout)]
        self.seen.append(module.model.training and bool(dropouts) and all(dropouts))


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_cola, tiny_tokenizer):
    tmp_path = tmp_path_factory.mktemp("trained")
    seed_everything(0)
    model = SequenceClassifier(model=tiny_bert(tiny_tokenizer), tokenizer=tiny_tokenizer, lr=5e-3, warmup_ratio=0.0)
    dm = TextClassificationDataModule(tiny_tokenizer, data_dir=str(tiny_cola), batch_size=8, eval_batch_size=6).setup()
    samples, watch = MisclassifiedExamples(dm.sentences["validation"]), DropoutWatch()
    checkpoint = ModelCheckpoint(monitor="valid/loss")
    trainer = Trainer(max_epochs=2, log_every_n_steps=2, logger=CSVLogger(str(tmp_path / "run")),
                      callbacks=[checkpoint, samples, watch], default_root_dir=str(tmp_path / "run"),
                      enable_progress_bar=False)
    trainer.fit(model, dm.train_dataloader(), dm.val_dataloader())
    return model, dm, trainer, samples, watch, tmp_path / "run"


def independent_predictions(model, dm):
    model.eval()
    with torch.no_grad():
        enc = dm.tokenizer(dm.sentences["validation"], padding=True, return_tensors="pt")
        logits = model.model(**enc).logits
    return logits


def test_validation_metrics_match_scikit_learn(trained):
    model, dm, trainer, *_ , run = trained
    logits = independent_predictions(model, dm)
    y, p = np.array(dm.labels["validation"]), logits.argmax(-1).numpy()
    expected = {
        "valid/acc": skm.accuracy_score(y, p),
        "valid/precision_macro": skm.precision_score(y, p, average="macro", zero_division=0),
        "valid/recall_macro": skm.recall_score(y, p, average="macro", zero_division=0),
        "valid/precision_micro": skm.precision_score(y, p, average="micro"),
        "valid/recall_micro": skm.recall_score(y, p, average="micro"),
        "valid/f1": skm.f1_score(y, p, average="macro", zero_division=0),
        "valid/mcc": skm.matthews_corrcoef(y, p),
        "valid/loss_epoch": torch.nn.functional.cross_entropy(logits, torch.tensor(y)).item(),
    }
    last = pd.read_csv(run / "metrics.csv").dropna(subset=["valid/acc"]).iloc[-1]
    expected["valid/f1_micro"] = skm.f1_score(y, p, average="micro")
    for name, value in expected.items():
        assert last[name] == pytest.approx(value, abs=1e-5), name
    assert "valid/f1_positive" not in last.index  # MRPC's and QQP's metric, not CoLA's
    per_class = pd.read_csv(run / "tables" / f"per_class-step{trainer.global_step}.csv")
    assert per_class["class"].tolist() == ["unacceptable", "acceptable"]
    assert per_class["f1"].tolist() == pytest.approx(skm.f1_score(y, p, average=None, labels=[0, 1], zero_division=0))
    assert per_class["support"].tolist() == np.bincount(y, minlength=2).tolist()
    assert {"train/loss_step", "train/acc_step", "train/loss_epoch", "train/acc_epoch"} <= set(last.index)

    counts = pd.read_csv(run / "tables" / f"Confusion_Matrix-step{trainer.global_step}.csv", index_col=0)
    assert counts.values.tolist() == skm.confusion_matrix(y, p, labels=[0, 1]).tolist()
    assert (run / "plots" / f"Confusion_Matrix-step{trainer.global_step}.png").stat().st_size > 10_000


def test_examples_table_is_exactly_the_misclassified_dev_sentences(trained):
    model, dm, trainer, samples, _, run = trained
    probs = independent_predictions(model, dm).softmax(-1)
    preds = probs.argmax(-1).tolist()
    wrong = [i for i, (label, pred) in enumerate(zip(dm.labels["validation"], preds)) if label != pred]
    table = pd.read_csv(run / "tables" / f"examples-step{trainer.global_step}.csv")
    assert list(table.columns) == ["Sentence", "Label", "Predicted", "Probability"]
    assert table["Sentence"].tolist() == [dm.sentences["validation"][i] for i in wrong]
    names = ["unacceptable", "acceptable"]  # the class names, not 0/1
    assert table["Label"].tolist() == [names[dm.labels["validation"][i]] for i in wrong]
    assert table["Predicted"].tolist() == [names[preds[i]] for i in wrong]
    assert table["Probability"].tolist() == pytest.approx([probs[i].max().item() for i in wrong], abs=1e-4)
    assert len(list((run / "tables").glob("examples-step*.csv"))) == 2  # after every validation


def test_hugging_face_model_trains_in_train_mode(trained):
    *_, watch, _ = trained
    assert watch.seen and all(watch.seen)  # from_pretrained's eval mode must not leak into training


def test_checkpoint_is_a_hugging_face_folder(trained, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, dm, trainer, *_ , run = trained
    best = run / "checkpoints" / "best"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in best.iterdir()}
    loaded = AutoModelForSequenceClassification.from_pretrained(best).eval()
    tokenizer = AutoTokenizer.from_pretrained(best)
    assert loaded.config.id2label == {0: "unacceptable", 1: "acceptable"}
    enc = tokenizer(["The cat saw him.", "Him saw the cat."], padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = loaded(**enc).logits.softmax(-1)
    predicted = Predictor(str(best)).predict(["The cat saw him.", "Him saw the cat."])
    assert [[s["label"] for s in row] for row in predicted] == [["unacceptable", "acceptable"]] * 2
    np.testing.assert_allclose([[s["score"] for s in row] for row in predicted], probs.numpy(), atol=1e-6)
    assert SequenceClassifier(model_name=str(best)).model.config.num_labels == 2


def test_head_learning_rate_goes_to_pooler_and_classifier(tiny_tokenizer):
    model = SequenceClassifier(model=tiny_bert(tiny_tokenizer), tokenizer=tiny_tokenizer, lr=1e-5, head_lr=1e-3)
    trainer = Trainer(max_epochs=2, enable_progress_bar=False)
    trainer.module, model._trainer, trainer.estimated_stepping_batches = model, trainer, 100
    config = model.configure_optimizers()
    names = {id(p): n for n, p in model.model.named_parameters()}
    assert sum(len(g["params"]) for g in config["optimizer"].param_groups) == len(names)
    head = {names[id(p)] for g in config["optimizer"].param_groups if g["initial_lr"] == 1e-3 for p in g["params"]}
    assert head == {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"}
    decay = {names[id(p)] for g in config["optimizer"].param_groups if g["weight_decay"] == 0 for p in g["params"]}
    assert all(n.endswith("bias") or "LayerNorm" in n for n in decay)


def test_same_seed_same_run(tmp_path, tiny_cola, tiny_tokenizer):
    """deterministic=True as the seed passes it: two runs give the same weights and the same metrics, bit for bit."""
    def run(name):
        seed_everything(7, deterministic=True)
        model = SequenceClassifier(model=tiny_bert(tiny_tokenizer, seed=7), tokenizer=tiny_tokenizer,
                          lr=1e-3)
        dm = TextClassificationDataModule(tiny_tokenizer, data_dir=str(tiny_cola), batch_size=8, seed=7).setup()
        trainer = Trainer(max_epochs=2, log_every_n_steps=1, logger=CSVLogger(str(tmp_path / name)),
                          enable_progress_bar=False)
        trainer.fit(model, dm.train_dataloader(), dm.val_dataloader())
        return model.state_dict(), pd.read_csv(tmp_path / name / "metrics.csv")

    (w1, m1), (w2, m2) = run("a"), run("b")
    pd.testing.assert_frame_equal(m1, m2, check_exact=True)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def test_the_optimizer_is_fused_adamw_and_steps_as_the_reference_adamw(tiny_tokenizer):
    seed_everything(0)
    model = SequenceClassifier(model=tiny_bert(tiny_tokenizer), tokenizer=tiny_tokenizer, lr=1e-2, weight_decay=0.1,
                      warmup_ratio=0.0)
    reference = {name: p.detach().clone() for name, p in model.model.named_parameters()}
    trainer = Trainer(max_steps=1, enable_progress_bar=False)
    model._trainer = trainer
    trainer.estimated_stepping_batches = 10
    optimizer = model.configure_optimizers()["optimizer"]
    assert optimizer.defaults["fused"] is True
    grads = {name: torch.randn_like(p) for name, p in model.model.named_parameters()}
    for name, p in model.model.named_parameters():
        p.grad = grads[name].clone()
    optimizer.step()
    # torch's for-loop AdamW on copies, with the same groups: decay on weights, none on biases and LayerNorm
    for group in optimizer.param_groups:
        names = [n for n, p in model.model.named_parameters() if any(p is q for q in group["params"])]
        copies = [reference[n].clone().requires_grad_() for n in names]
        for n, c in zip(names, copies):
            c.grad = grads[n].clone()
        torch.optim.AdamW(copies, lr=group["lr"], weight_decay=group["weight_decay"], foreach=False).step()
        for n, c in zip(names, copies):
            torch.testing.assert_close(dict(model.model.named_parameters())[n].detach(), c.detach())


def test_every_metric_the_classifier_logs_may_be_monitored(trained):
    """What a validation logs (read from the run's metrics.csv) is what --monitor accepts: METRICS once lacked
    valid/f1_micro, so `--monitor valid/f1_micro` was refused."""
    from models.tasks import check_monitor, monitorable

    *_, run_dir = trained
    logged = {c.removesuffix("_epoch").removesuffix("_step") for c in pd.read_csv(run_dir / "metrics.csv").columns
              if c not in ("epoch", "step")}
    cola = type("Source", (), {"kind": "glue", "task": "cola", "label_names": ("unacceptable", "acceptable")})
    assert logged == set(monitorable(cola)) and "valid/f1_micro" in logged
    for name in logged:
        check_monitor(name, cola)
        check_monitor(f"{name}_epoch", cola)


def test_the_seeds_names_are_the_classes_of_today():
    from models import ColaModel, ColaPredictor, SamplesVisualisationLogger

    assert (ColaModel, ColaPredictor, SamplesVisualisationLogger) == (SequenceClassifier, Predictor,
                                                                      MisclassifiedExamples)
