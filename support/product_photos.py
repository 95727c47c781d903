"""Turn real Fashion-MNIST images into shop-style product photos, to test the photo preprocessing.

The inverse of how the dataset was made: negate (dark item on white), upscale, tint, add white margins,
rotate the pixels and record an EXIF orientation that undoes it, JPEG-compress.
"""

import io

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 0x0112
# EXIF orientation value -> the rotation applied to the stored pixels that this tag undoes.
ROTATIONS = {
    1: None,
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


def product_photo(image: np.ndarray, seed: int, image_format: str = "JPEG") -> bytes:
    """Encode one uint8 (28, 28) Fashion-MNIST image as a product photo; `seed` picks the variations."""
    rng = np.random.default_rng(seed)
    scale = int(rng.integers(6, 15))
    item = Image.fromarray(255 - image).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC)
    tint = rng.uniform(0.75, 1.0, size=3)
    pixels = np.asarray(item.convert("RGB"), dtype=np.float64)
    coloured = 255 - (255 - pixels) * tint  # colour the item, keep the white background white
    margins = rng.integers(10, 60, size=4)
    height, width = coloured.shape[:2]
    canvas = np.full((height + margins[0] + margins[1], width + margins[2] + margins[3], 3), 255.0)
    canvas[margins[0] : margins[0] + height, margins[2] : margins[2] + width] = coloured
    photo = Image.fromarray(canvas.round().astype(np.uint8))
    orientation = int(rng.choice(list(ROTATIONS)))
    rotation = ROTATIONS[orientation]
    if rotation is not None:
        photo = photo.transpose(rotation)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    buffer = io.BytesIO()
    photo.save(buffer, format=image_format, quality=int(rng.integers(75, 95)), exif=exif)
    return buffer.getvalue()
