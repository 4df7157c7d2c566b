"""The two pipelines this project is measured against, each run in its own process by `throughput.py`.

- `lightning_seed`: the blog post's pipeline, in PyTorch Lightning 2.x: every sentence padded to 128 tokens by the
  tokenizer, shuffled batches, the post's LightningModule (torchmetrics accuracy, precision, recall, F1; W&B
  confusion matrix), its ModelCheckpoint / EarlyStopping / misclassified-examples callbacks, a WandbLogger (offline
  here) and `log_every_n_steps=10`. Only the model is all-MiniLM-L6-v2 instead of the post's 2-layer BERT.
- `bare_loop`: plain PyTorch: per-batch padding with `DataCollatorWithPadding`, shuffled batches, AdamW, no
  logging, no metrics, no progress bar; on the GPU when there is one (batches pinned and copied without a wait).
Both stop the process right after the last timed step: only training steps are compared.
"""
from __future__ import annotations

import os

from _common import StepClock, emit, minilm_path, train_flops


def _cola(data_dir: str):
    from data.glue import load_cola

    return load_cola(data_dir)


def lightning_seed(data_dir: str, batch_size: int, steps: int, warmup: int, clock: StepClock, workdir: str) -> None:
    import lightning.pytorch as pl
    import pandas as pd
    import torch
    import torchmetrics
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    try:
        import wandb
    except ImportError:  # a GPU machine without W&B: Lightning's CSVLogger, and no W&B tables or plots
        wandb = None
    from sklearn.metrics import confusion_matrix
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    class DataModule(pl.LightningDataModule):
        def __init__(self, model_name, batch_size):
            super().__init__()
            self.batch_size = batch_size
            self.tokenizer = AutoTokenizer.from_pretrained(model_name)

        def prepare_data(self):
            self.cola_dataset = _cola(data_dir)
            self.train_data, self.val_data = self.cola_dataset["train"], self.cola_dataset["validation"]

        def tokenize_data(self, example):
            return self.tokenizer(example["sentence"], truncation=True, padding="max_length", max_length=128)

        def setup(self, stage=None):
            if stage == "fit" or stage is None:
                self.train_data = self.train_data.map(self.tokenize_data, batched=True)
                self.train_data.set_format(type="torch", columns=["input_ids", "attention_mask", "label"])
                self.val_data = self.val_data.map(self.tokenize_data, batched=True)
                self.val_data.set_format(type="torch", columns=["input_ids", "attention_mask", "label"],
                                         output_all_columns=True)

        def train_dataloader(self):
            return DataLoader(self.train_data, batch_size=self.batch_size, shuffle=True)

        def val_dataloader(self):
            return DataLoader(self.val_data, batch_size=self.batch_size, shuffle=False)

    class ColaModel(pl.LightningModule):
        def __init__(self, model_name, lr=3e-5):
            super().__init__()
            self.save_hyperparameters()
            self.bert = AutoModelForSequenceClassification.from_pretrained(model_name, num_labels=2)
            self.num_classes = 2
            kw = {"task": "multiclass", "num_classes": 2}
            self.train_accuracy_metric = torchmetrics.Accuracy(**kw)
            self.val_accuracy_metric = torchmetrics.Accuracy(**kw)
            self.f1_metric = torchmetrics.F1Score(**kw)
            self.precision_macro_metric = torchmetrics.Precision(average="macro", **kw)
            self.recall_macro_metric = torchmetrics.Recall(average="macro", **kw)
            self.precision_micro_metric = torchmetrics.Precision(average="micro", **kw)
            self.recall_micro_metric = torchmetrics.Recall(average="micro", **kw)
            self.outputs = []

        def forward(self, input_ids, attention_mask, labels=None):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask, labels=labels)

        def training_step(self, batch, batch_idx):
            outputs = self.forward(batch["input_ids"], batch["attention_mask"], labels=batch["label"])
            preds = torch.argmax(outputs.logits, 1)
            train_acc = self.train_accuracy_metric(preds, batch["label"])
            self.log("train/loss", outputs.loss, prog_bar=True, on_epoch=True)
            self.log("train/acc", train_acc, prog_bar=True, on_epoch=True)
            return outputs.loss

        def validation_step(self, batch, batch_idx):
            labels = batch["label"]
            outputs = self.forward(batch["input_ids"], batch["attention_mask"], labels=batch["label"])
            preds = torch.argmax(outputs.logits, 1)
            self.log("valid/loss", outputs.loss, prog_bar=True, on_step=True)
            self.log("valid/acc", self.val_accuracy_metric(preds, labels), prog_bar=True)
            self.log("valid/precision_macro", self.precision_macro_metric(preds, labels), prog_bar=True)
            self.log("valid/recall_macro", self.recall_macro_metric(preds, labels), prog_bar=True)
            self.log("valid/precision_micro", self.precision_micro_metric(preds, labels), prog_bar=True)
            self.log("valid/recall_micro", self.recall_micro_metric(preds, labels), prog_bar=True)
            self.log("valid/f1", self.f1_metric(preds, labels), prog_bar=True)
            self.outputs.append({"labels": labels, "logits": outputs.logits})

        def on_validation_epoch_end(self):  # Lightning 2.x's place for the post's validation_epoch_end
            labels = torch.cat([x["labels"] for x in self.outputs]).cpu()  # .cpu(): a no-op without a GPU
            logits = torch.cat([x["logits"] for x in self.outputs]).cpu()
            self.outputs.clear()
            confusion_matrix(labels.numpy(), torch.argmax(logits, 1).numpy())
            if wandb is not None:
                self.logger.experiment.log({"conf": wandb.plot.confusion_matrix(probs=logits.numpy(),
                                                                                y_true=labels.numpy())})

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.hparams["lr"])

    class SamplesVisualisationLogger(pl.Callback):
        def __init__(self, datamodule):
            super().__init__()
            self.datamodule = datamodule

        def on_validation_end(self, trainer, pl_module):
            val_batch = next(iter(self.datamodule.val_dataloader()))
            sentences = val_batch["sentence"]
            outputs = pl_module(val_batch["input_ids"].to(pl_module.device),
                                val_batch["attention_mask"].to(pl_module.device))
            preds = torch.argmax(outputs.logits, 1).cpu()
            labels = val_batch["label"]
            df = pd.DataFrame({"Sentence": sentences, "Label": labels.numpy(), "Predicted": preds.numpy()})
            wrong_df = df[df["Label"] != df["Predicted"]]
            if wandb is not None:
                trainer.logger.experiment.log({"examples": wandb.Table(dataframe=wrong_df, allow_mixed_types=True),
                                               "global_step": trainer.global_step})

    class Clock(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            clock.step_done(batch["input_ids"])
            if len(clock.times) == steps:
                emit(clock.result("lightning_seed", warmup, flops=train_flops(pl_module.bert, clock.shapes[warmup:])))
                os._exit(0)  # training steps only: no end-of-fit validation, checkpoint or W&B upload

    name = minilm_path()
    cola_data = DataModule(name, batch_size)
    cola_model = ColaModel(name)
    checkpoint_callback = ModelCheckpoint(dirpath=os.path.join(workdir, "models"), filename="best-checkpoint",
                                          monitor="valid/loss", mode="min")
    early_stopping_callback = EarlyStopping(monitor="valid/loss", patience=3, verbose=True, mode="min")
    wandb_logger = WandbLogger(project="MLOps Basics", save_dir=workdir, offline=True) if wandb is not None \
        else CSVLogger(workdir)
    trainer = pl.Trainer(
        max_epochs=1, max_steps=steps, logger=wandb_logger, log_every_n_steps=10, deterministic=True,
        callbacks=[checkpoint_callback, SamplesVisualisationLogger(cola_data), early_stopping_callback, Clock()],
        default_root_dir=workdir,
    )
    trainer.fit(cola_model, cola_data)


def bare_loop(data_dir: str, batch_size: int, steps: int, warmup: int, clock: StepClock, workdir: str) -> None:
    import torch
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    torch.manual_seed(42)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(name)
    model = AutoModelForSequenceClassification.from_pretrained(name, num_labels=2).to(device)
    train = _cola(data_dir)["train"].map(lambda b: tokenizer(b["sentence"], truncation=True, max_length=128),
                                         batched=True, remove_columns=["sentence", "idx"])
    loader = DataLoader(train, batch_size=batch_size, shuffle=True, collate_fn=DataCollatorWithPadding(tokenizer),
                        pin_memory=device.type == "cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    model.train()
    for batch in loader:
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        clock.step_done(batch["input_ids"])
        if len(clock.times) == steps:
            break
    emit(clock.result("bare_loop", warmup, flops=train_flops(model, clock.shapes[warmup:])))
    os._exit(0)
