"""Run by test_distributed.py under torchrun: trains a tiny model and writes, from the main process, which samples
each process trained in each epoch and how many optimizer steps it made."""
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data import TextClassificationDataModule  # noqa: E402
from models import SequenceClassifier  # noqa: E402
from trainer import Callback, EarlyStopping, Trainer  # noqa: E402


class Record(Callback):
    def __init__(self):
        self.seen, self.decisions = [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.seen.append([trainer.current_epoch, batch["idx"].tolist()])

    def on_validation_end(self, trainer, module):  # runs after EarlyStopping's, which comes first in the list
        self.decisions.append([trainer.callback_metrics["valid/loss"], trainer.should_stop])

    def on_fit_end(self, trainer, module):
        from accelerate.utils import gather_object

        everything = gather_object([{"rank": trainer.accelerator.process_index, "seen": self.seen,
                                     "steps": trainer.global_step, "decisions": self.decisions}])
        if trainer.is_main_process:
            Path(sys.argv[3]).write_text(json.dumps(everything))


if __name__ == "__main__":
    model_dir, data_dir = sys.argv[1], sys.argv[2]
    model = SequenceClassifier(model_name=model_dir, lr=1e-3)
    dm = TextClassificationDataModule(model.tokenizer, data_dir=data_dir, batch_size=7).setup()
    # min_delta=1 makes every validation after the first count as no improvement: a stop after epoch 2 of 3
    trainer = Trainer(max_epochs=3, callbacks=[EarlyStopping(monitor="valid/loss", patience=1, min_delta=1.0),
                                               Record()], enable_progress_bar=False)
    trainer.fit(model, dm.train_dataloader(num_processes=trainer.accelerator.num_processes), dm.val_dataloader())
