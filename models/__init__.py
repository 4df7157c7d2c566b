"""What is task-specific: the classifier with its metrics (classifier.py), each task's official metrics and what may
be monitored (tasks.py), loading models (loading.py, pretrained.py), the misclassified-examples callback
(callbacks.py), the charts (charts.py), the run report (report.py) and the predictor (predictor.py). Names are imported
on first use, so `predict.py` loads the predictor without the training side (torchmetrics, pandas)."""
import importlib

_HOMES = {"SequenceClassifier": "models.classifier", "ColaModel": "models.classifier",
          "MisclassifiedExamples": "models.callbacks", "SamplesVisualisationLogger": "models.callbacks",
          "Predictor": "models.predictor", "ColaPredictor": "models.predictor",
          "DEFAULT_MODEL": "models.pretrained", "MINILM": "models.pretrained", "resolve_model_path": "models.pretrained",
          "OFFICIAL_METRICS": "models.tasks", "official_metrics": "models.tasks", "ModelError": "models.loading"}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'models' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
