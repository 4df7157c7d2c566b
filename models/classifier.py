"""`SequenceClassifier` (the seed's name `ColaModel` is an alias): a transformer classifier for N named classes with
the seed's metrics, as a `TrainerModule`.

Metric names are the seed's (`train/loss`, `train/acc`, `valid/loss`, `valid/acc`, `valid/precision_macro`,
`valid/recall_macro`, `valid/precision_micro`, `valid/recall_micro`, `valid/f1` = macro F1) plus `valid/mcc`
(Matthews correlation, multi-class for more than two classes: CoLA's official metric), then `valid/f1_micro`, and
`valid/f1_positive` (F1 of class 1, MRPC's and QQP's official F1) when asked for. A `per_class` table holds each
class's precision, recall, F1 and support. Validation metrics are computed over the whole dev set, gathered from
every process.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Sequence

import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassPrecision, MulticlassRecall

from models.charts import PER_CLASS, WANDB_CONFUSION_CHARTS, log_classification_charts
from models.pretrained import DEFAULT_MODEL, resolve_model_path
from trainer import TrainerModule

log = logging.getLogger(__name__)
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Every metric the model logs by the time a validation ends (`_epoch` forms too), what `--monitor` may name;
# `valid/f1_positive` only for the tasks that ask for it (`f1_positive`).
METRICS = ("valid/loss", "valid/acc", "valid/precision_macro", "valid/recall_macro", "valid/precision_micro",
           "valid/recall_micro", "valid/f1", "valid/mcc", "valid/f1_micro", "train/loss", "train/acc")


@contextlib.contextmanager
def _plain_bincount(device: torch.device):
    """While deterministic algorithms are on, torchmetrics counts classes with a dense comparison (batch x classes²
    values: 512 MB a batch, and seconds, for 1,000 classes) instead of torch.bincount. On a CPU, torch.bincount is
    deterministic by itself: the flag is let off around the update, and the counts are the same."""
    if device.type != "cpu" or not torch.are_deterministic_algorithms_enabled():
        yield
        return
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(False)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(True, warn_only=warn_only)


class SequenceClassifier(TrainerModule):
    def __init__(
        self,
        model_name: str = DEFAULT_MODEL,
        lr: float = 5e-5,
        head_lr: float | None = None,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        dropout: float | None = None,
        model=None,
        tokenizer=None,
        label_names: Sequence[str] | None = None,
        f1_positive: bool = False,
        wandb_charts: Sequence[str] = WANDB_CONFUSION_CHARTS,
    ) -> None:
        """`model`/`tokenizer` may be given ready-made (tests build tiny random BERTs; the class names are then the
        model config's); otherwise both are loaded from `model_name`. `head_lr` is the learning rate of the freshly
        initialised pooler and classifier; `dropout` overrides the checkpoint's hidden and attention dropout.

        `label_names`: the classes in id order, saved in the checkpoint's config (`id2label`, `label2id`); a head of
        another size in `model_name` is replaced by a fresh one. None: the checkpoint's own classes.
        `f1_positive`: also log `valid/f1_positive`, the F1 of class 1 (binary tasks such as MRPC and QQP).
        `wandb_charts`: the seed's confusion-matrix charts W&B draws (models/charts.py)."""
        super().__init__()
        from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

        self.model_name, self.lr, self.head_lr = model_name, lr, head_lr
        self.weight_decay, self.warmup_ratio = weight_decay, warmup_ratio
        path = resolve_model_path(model_name) if model is None or tokenizer is None else model_name
        self.tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(path)
        overrides = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
        if model is None and label_names is not None:
            label_names = [str(n) for n in label_names]
            head = {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
                    "label2id": {n: i for i, n in enumerate(label_names)}}
            if AutoConfig.from_pretrained(path).num_labels != len(label_names):
                head["ignore_mismatched_sizes"] = True  # e.g. a binary checkpoint fine-tuned on 3 classes
        else:
            head = {}
        self.loading_info: dict = {}  # what from_pretrained found missing (a new head) or unexpected
        if model is None:
            model, self.loading_info = AutoModelForSequenceClassification.from_pretrained(
                path, **head, **overrides, output_loading_info=True)
        self.model = model
        config = self.model.config
        self.label_names = [str(config.id2label[i]) for i in range(config.num_labels)]
        self.f1_positive = f1_positive and len(self.label_names) == 2
        self.wandb_charts = tuple(wandb_charts)
        self._said_empty = False  # that a class has no validation row: said once
        n = len(self.label_names)
        # Inputs are gathered from every process before update, so torchmetrics must not sync again.
        kw = {"num_classes": n, "sync_on_compute": False}
        self.val_accuracy_metric = MulticlassAccuracy(average="micro", **kw)
        self.f1_metric = MulticlassF1Score(average="macro", **kw)
        self.precision_macro_metric = MulticlassPrecision(average="macro", **kw)
        self.recall_macro_metric = MulticlassRecall(average="macro", **kw)
        self.precision_micro_metric = MulticlassPrecision(average="micro", **kw)
        self.recall_micro_metric = MulticlassRecall(average="micro", **kw)

    def _set_problem_type(self) -> None:
        """transformers sets `config.problem_type` in the first forward, which makes torch.compile compile twice."""
        if getattr(self.model.config, "problem_type", "") is None:
            self.model.config.problem_type = "single_label_classification"  # what it sets for class-index labels

    def compile_model(self) -> None:
        """`--compile`: torch.compile the transformer in place, with dynamic shapes (parameter names, checkpoints and
        hooks stay as they are). Training and validation (no autograd) are compiled once each, unless a batch's
        length equals its size at the first step (dynamo then specialises on that equality and compiles again)."""
        self._set_problem_type()
        self.model.compile(dynamic=True)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                          labels=labels)

    def _forward_batch(self, batch):
        return self(**{k: batch[k] for k in MODEL_INPUTS if k in batch}, labels=batch["labels"])

    def training_step(self, batch, batch_idx):
        outputs = self._forward_batch(batch)
        # Micro accuracy as a plain batch mean: the epoch value, a mean weighted by batch size, is the epoch's micro
        # accuracy. Three kernels; a torchmetrics Metric's forward takes dozens and much Python every step.
        train_acc = (outputs.logits.argmax(-1) == batch["labels"]).float().mean()
        self.log("train/loss", outputs.loss, prog_bar=True, on_epoch=True)
        self.log("train/acc", train_acc, prog_bar=True, on_epoch=True)
        return outputs.loss

    def validation_step(self, batch, batch_idx):
        outputs = self._forward_batch(batch)
        logits, labels, idx = self.all_gather_for_metrics((outputs.logits, batch["labels"], batch["idx"]))
        # From the gathered batch, so every dev sentence counts once whatever the number of processes.
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        self.log("valid/loss", loss, prog_bar=True, on_step=True, batch_size=len(labels))
        preds = logits.argmax(-1)
        with _plain_bincount(preds.device):
            for metric in (self.val_accuracy_metric, self.precision_macro_metric, self.recall_macro_metric,
                           self.precision_micro_metric, self.recall_micro_metric, self.f1_metric):
                metric.update(preds, labels)
        self.log("valid/acc", self.val_accuracy_metric, prog_bar=True)
        self.log("valid/precision_macro", self.precision_macro_metric)
        self.log("valid/recall_macro", self.recall_macro_metric)
        self.log("valid/precision_micro", self.precision_micro_metric)
        self.log("valid/recall_micro", self.recall_micro_metric)
        self.log("valid/f1", self.f1_metric)
        return {"labels": labels, "logits": logits, "preds": preds, "idx": idx}

    def validation_epoch_end(self, outputs):
        if not outputs:
            return
        import pandas as pd
        from sklearn.metrics import f1_score, matthews_corrcoef, precision_recall_fscore_support

        labels = torch.cat([x["labels"] for x in outputs]).cpu()
        logits = torch.cat([x["logits"] for x in outputs]).float().cpu()
        preds = logits.argmax(-1)
        # scikit-learn, as GLUE's own scorer: 0 for a constant predictor, where torchmetrics 1.x returns a small
        # positive number (0.049 on a majority-class dev subset), which would flatter a collapsed model.
        self.log("valid/mcc", float(matthews_corrcoef(labels.numpy(), preds.numpy())), prog_bar=True, batch_size=1)
        self.log("valid/f1_micro", float(f1_score(labels.numpy(), preds.numpy(), average="micro")), batch_size=1)
        if self.f1_positive:
            self.log("valid/f1_positive", float(f1_score(labels.numpy(), preds.numpy(), pos_label=1, zero_division=0)),
                     batch_size=1)
        classes = list(range(len(self.label_names)))
        precision, recall, f1, support = precision_recall_fscore_support(labels.numpy(), preds.numpy(),
                                                                         labels=classes, zero_division=0)
        self.logger.log_table(PER_CLASS, pd.DataFrame({"class": self.label_names, "precision": precision,
                                                         "recall": recall, "f1": f1, "support": support}),
                              step=self.global_step)
        empty = [name for name, n in zip(self.label_names, support) if n == 0]
        if empty and not self._said_empty and self.trainer.is_main_process:  # once a run, instead of
            self._said_empty = True                                          # scikit-learn's dozen a validation
            shown = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
            log.warning("warning: no validation row of class %s: its recall and F1 count as 0 and it has no ROC or "
                        "precision-recall curve", shown)
        log_classification_charts(self.logger, labels.numpy(), logits.softmax(-1).numpy(), self.label_names,
                                  step=self.global_step, wandb_charts=self.wandb_charts)

    def configure_optimizers(self):
        from transformers import get_linear_schedule_with_warmup

        no_decay = ("bias", "LayerNorm.weight", "LayerNorm.bias")
        head = ("classifier.", "pooler.")
        groups: dict[tuple, list] = {}
        for name, param in self.model.named_parameters():
            if not param.requires_grad:
                continue
            is_head = self.head_lr is not None and any(h in name for h in head)
            decay = 0.0 if any(n in name for n in no_decay) else self.weight_decay
            groups.setdefault((self.head_lr if is_head else self.lr, decay), []).append(param)
        # fused: one kernel for all parameters; on a 2-core CPU the step takes about 10 ms instead of 45 (BENCHMARKS.md)
        optimizer = torch.optim.AdamW([{"params": p, "lr": lr, "weight_decay": wd} for (lr, wd), p in groups.items()],
                                      lr=self.lr, fused=True)
        total = int(self.trainer.estimated_stepping_batches)
        scheduler = get_linear_schedule_with_warmup(optimizer, int(self.warmup_ratio * total), total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def save_pretrained(self, path: str) -> None:
        """A Hugging Face folder (safetensors weights, config, tokenizer) that
        `AutoModelForSequenceClassification.from_pretrained` and `SequenceClassifier(model_name=path)` both load."""
        os.makedirs(path, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)


ColaModel = SequenceClassifier  # the seed's name
