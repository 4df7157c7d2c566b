"""Data: GLUE tasks and CoLA's TSV files (glue.py), CSV/TSV/JSON-lines files or any Hugging Face dataset
(sources.py), tokenized, cached and batched (datamodule.py, cache.py, sampling.py); the data-source flags (flags.py)
and the Hub check (hub.py). Knows no model class and no training loop. Names are imported on first use."""
import importlib

_HOMES = {"TextClassificationDataModule": "data.datamodule", "ColaDataModule": "data.datamodule",
          "DataError": "data.errors", "DATA_DIR_ENV": "data.glue", "GLUE_TASKS": "data.glue", "HUB_DATASET": "data.glue",
          "load_cola": "data.glue", "read_glue_tsv": "data.glue", "resolve_data_dir": "data.glue",
          "DataSource": "data.sources", "read_table": "data.files"}
__all__ = list(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'data' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
