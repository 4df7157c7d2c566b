"""What is task-specific: the classifier with its metrics, each task's official metrics, the misclassified-samples
callback, the predictor."""
from models.callbacks import SamplesVisualisationLogger
from models.cola import DEFAULT_MODEL, LABELS, MINILM, ColaModel, resolve_model_path
from models.predictor import ColaPredictor
from models.tasks import OFFICIAL_METRICS, official_metrics

SequenceClassifier = ColaModel  # the same class: CoLA's two labels are only its default

__all__ = ["SamplesVisualisationLogger", "DEFAULT_MODEL", "LABELS", "MINILM", "ColaModel", "SequenceClassifier",
           "resolve_model_path", "ColaPredictor", "OFFICIAL_METRICS", "official_metrics"]
