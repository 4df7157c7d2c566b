"""What is task-specific: the classifier with its metrics, each task's official metrics, the misclassified-samples
callback, the predictor. Names are imported on first use, so `predict.py` loads the predictor without the training
side (torchmetrics, pandas)."""
import importlib

_HOMES = {"SamplesVisualisationLogger": "models.callbacks", "LABELS": "models.cola", "ColaModel": "models.cola",
          "DEFAULT_MODEL": "models.pretrained", "MINILM": "models.pretrained",
          "resolve_model_path": "models.pretrained", "ColaPredictor": "models.predictor",
          "OFFICIAL_METRICS": "models.tasks", "official_metrics": "models.tasks"}
__all__ = ["SamplesVisualisationLogger", "DEFAULT_MODEL", "LABELS", "MINILM", "ColaModel", "SequenceClassifier",
           "resolve_model_path", "ColaPredictor", "OFFICIAL_METRICS", "official_metrics"]


def __getattr__(name: str):
    if name == "SequenceClassifier":  # the same class as ColaModel: CoLA's two labels are only its default
        name = "ColaModel"
    if name not in _HOMES:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
