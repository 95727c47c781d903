"""A grey image as a JPEG decodes it: what a client's re-encoding does to an image."""

import io

import numpy as np
from PIL import Image


def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer))
