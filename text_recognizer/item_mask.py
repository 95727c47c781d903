"""Which pixels of a photo are the item: a background model seeded from the photo's border.

Product photos put the item on a backdrop that reaches the frame; phone photos put it on a floor, a bed
or a wall, whose colours vary but still fill the border. The border's colours are summarised by a few
k-means centres; pixels near one of them are background candidates, and the candidates connected to the
border are the background (a flood fill, so background-coloured parts inside the item stay item). Used by
`text_recognizer.preprocessing` only; numpy and Pillow, a few milliseconds at the working size.
"""

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

BORDER = 2  # pixels of the frame (at the working size) that sample the background
CENTRES = 6  # background colours: a wood floor's light and dark grain, a wall and a floor, shadows
# A colour on less of the border than this is the item reaching the frame (a sleeve), not background.
MIN_BORDER_SHARE = 0.1
ITERATIONS = 8
CANDIDATE = 255
BACKGROUND = 128


def border_pixels(rgb: np.ndarray) -> np.ndarray:
    top, bottom = rgb[:BORDER].reshape(-1, 3), rgb[-BORDER:].reshape(-1, 3)
    left, right = rgb[BORDER:-BORDER, :BORDER].reshape(-1, 3), rgb[BORDER:-BORDER, -BORDER:].reshape(-1, 3)
    return np.concatenate([top, bottom, left, right]).astype(np.float32)


def background_colours(samples: np.ndarray, count: int = CENTRES) -> np.ndarray:
    """The colours covering at least `MIN_BORDER_SHARE` of the border: deterministic k-means whose
    centres start at brightness quantiles of the samples."""
    brightness = samples.mean(axis=1)
    order = np.argsort(brightness, kind="stable")
    starts = order[np.linspace(0, len(order) - 1, count).round().astype(int)]
    centres = samples[starts].copy()
    for _ in range(ITERATIONS):
        nearest = np.argmin(((samples[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
        for index in range(count):
            members = samples[nearest == index]
            if len(members):
                centres[index] = members.mean(axis=0)
    nearest = np.argmin(((samples[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
    shares = np.bincount(nearest, minlength=count) / len(samples)
    kept: np.ndarray = centres[shares >= MIN_BORDER_SHARE]
    return kept


def item_mask(rgb: np.ndarray, tolerance: float) -> np.ndarray:
    """Boolean (H, W): True where the item is. `tolerance`: the RGB distance (0..441) within which a
    pixel matches a background colour. All True when no background can be told apart (the item fills
    the frame, or the photo is one colour)."""
    height, width = rgb.shape[:2]
    if height <= 2 * BORDER + 2 or width <= 2 * BORDER + 2:
        return np.ones((height, width), dtype=bool)
    centres = background_colours(border_pixels(rgb))
    pixels = rgb.reshape(-1, 1, 3).astype(np.float32)
    distance = np.sqrt(((pixels - centres[None]) ** 2).sum(axis=2)).min(axis=1).reshape(height, width)
    candidates = np.where(distance <= tolerance, CANDIDATE, 0).astype(np.uint8)
    # A one-pixel frame of candidates joins every border region, so one flood fill finds them all.
    framed = Image.fromarray(np.pad(candidates, 1, constant_values=CANDIDATE)).copy()  # writable
    ImageDraw.floodfill(framed, (0, 0), BACKGROUND, thresh=0)
    item = Image.fromarray(np.where(np.asarray(framed)[1:-1, 1:-1] == BACKGROUND, 0, 255).astype(np.uint8))
    # Opening: specks of floor texture that did not match a background colour are not the item.
    item = item.filter(ImageFilter.MinFilter(3)).filter(ImageFilter.MaxFilter(3))
    mask = np.asarray(item) > 0
    if not mask.any():
        return np.ones((height, width), dtype=bool)
    return mask
