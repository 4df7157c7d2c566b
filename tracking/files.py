"""What every writer of a run's files shares: atomic file writes, a tracker's run-id file, image conversion, and the
first line of an error (for one-line messages).

The rest of the project uses these too: `tracking` is the bottom layer, so any package may import from it.
"""
from __future__ import annotations

import contextlib
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
