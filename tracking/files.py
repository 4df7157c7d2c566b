"""What every writer of a run's files shares: atomic file writes, a tracker's run-id file, image conversion, and the
first line of an error (for one-line messages).

The rest of the project uses these too: `tracking` is the bottom layer, so any package may import from it.
"""
from __future__ import annotations

import contextlib
import errno
import os

import numpy as np


def first_line(exc: BaseException, with_type: bool = False, limit: int = 300) -> str:
    """The first non-blank line of `exc`'s message, else its type's name; `with_type`: `Type: line`. Never raises,
    whatever the message holds (empty, only whitespace, not a string)."""
    try:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    except Exception:  # a message whose __str__ itself fails
        lines = []
    text = lines[0] if lines else ""
    if not text:
        return type(exc).__name__
    return (f"{type(exc).__name__}: {text}" if with_type else text)[:limit]


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc` says the disk (or the quota) is full, whichever library raised it (an OSError, safetensors'
    SafetensorError, torch's writer)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return any(sign in text for sign in ("No space left on device", "os error 28", "Disk quota exceeded"))


def atomic_write(path: str, write) -> None:
    """Call `write(tmp)` to fill `path.tmp`, then rename it over `path`: a reader sees the old file or the new one,
    never half of one. Whatever fails (a full disk, a writer that raises), the `.tmp` file is removed."""
    tmp = f"{path}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def write_text(path: str, text: str) -> None:
    """`text` to `path` (UTF-8), atomically."""
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    atomic_write(path, write)


class RunIdFile:
    """A tracker's run id, kept in the run folder (`<run_dir>/<tracker>/run-id`) so that a resumed run continues
    the same tracker run."""

    def __init__(self, run_dir: str, tracker: str) -> None:
        self.path = os.path.join(run_dir, tracker, "run-id")

    def read(self) -> str | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def write(self, run_id: str) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_text(self.path, run_id)


def image_to_pil(image):
    """A matplotlib Figure, PIL image or HxW(xC) uint8 array as a PIL image (a Figure is drawn here)."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    if hasattr(image, "savefig"):
        import io

        buffer = io.BytesIO()
        image.savefig(buffer, format="png")
        buffer.seek(0)
        return Image.open(buffer).convert("RGBA")
    return Image.fromarray(np.asarray(image))


def plain(value):
    """Values as YAML-safe builtins (hyperparameters, summaries)."""
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, str):
        return str(value)  # also str subclasses such as torch's TorchVersion, which YAML cannot represent
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads as the start of a formula


def spreadsheet_safe(frame):
    """A copy of a DataFrame whose text cells and column names that a spreadsheet would run as formulas (`=1+1`,
    `@SUM(...)`) start with a `'`, which spreadsheets show as text; numbers are left as they are."""
    def safe(value):
        return f"'{value}" if isinstance(value, str) and value.startswith(FORMULA_STARTS) else value

    return _map_text(frame, safe)


def from_spreadsheet_safe(frame):
    """A table read back from a CSV file written with `spreadsheet_safe`, as it was logged."""
    def unsafe(value):
        return value[1:] if isinstance(value, str) and value[:1] == "'" and value[1:].startswith(FORMULA_STARTS) \
            else value

    return _map_text(frame, unsafe)


def _map_text(frame, fn):
    """`fn` on every text cell and column name of a copy of `frame` (numeric columns are left as they are)."""
    from pandas.api.types import is_numeric_dtype

    out = frame.copy()
    for column in out.columns:
        if not is_numeric_dtype(out[column]):
            out[column] = out[column].map(fn)
    out.columns = [fn(c) for c in out.columns]
    return out
