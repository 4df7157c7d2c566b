"""Data: GLUE tasks, CoLA's TSV files, CSV/TSV/JSON-lines files or any Hugging Face dataset, tokenized and batched."""
from data.cola import (DATA_DIR_ENV, HUB_DATASET, ColaDataModule, DataError, TextClassificationDataModule, load_cola,
                       read_glue_tsv, resolve_data_dir)
from data.sources import GLUE_TASKS, DataSource, read_table

__all__ = ["DATA_DIR_ENV", "HUB_DATASET", "ColaDataModule", "DataError", "TextClassificationDataModule", "load_cola",
           "read_glue_tsv", "resolve_data_dir", "GLUE_TASKS", "DataSource", "read_table"]
