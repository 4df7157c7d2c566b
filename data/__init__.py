"""Data: CoLA from the Hub or GLUE TSV files, tokenized and batched."""
from data.cola import DATA_DIR_ENV, HUB_DATASET, ColaDataModule, DataError, load_cola, read_glue_tsv, resolve_data_dir

__all__ = ["DATA_DIR_ENV", "HUB_DATASET", "ColaDataModule", "DataError", "load_cola", "read_glue_tsv",
           "resolve_data_dir"]
