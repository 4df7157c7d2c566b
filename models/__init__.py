"""What is CoLA-specific: the classifier with its metrics, the misclassified-samples callback, the predictor."""
from models.callbacks import SamplesVisualisationLogger
from models.cola import DEFAULT_MODEL, LABELS, MINILM, ColaModel, resolve_model_path
from models.predictor import ColaPredictor

__all__ = ["SamplesVisualisationLogger", "DEFAULT_MODEL", "LABELS", "MINILM", "ColaModel", "resolve_model_path",
           "ColaPredictor"]
