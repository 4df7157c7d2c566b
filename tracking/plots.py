"""Image conversion the backends share: a matplotlib Figure, PIL image or uint8 array as a PIL image."""
from __future__ import annotations

import numpy as np


def image_to_pil(image):
    """A matplotlib Figure, PIL image or uint8 array as a PIL image."""
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
