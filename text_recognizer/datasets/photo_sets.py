"""The shop photos of one split as model input: decoded and converted by the serving preprocessing.

Validation and test photos are converted when they are read, by the preprocessing the code has now, so
that evaluating them measures what the API would answer for those files.
"""

import functools
from pathlib import Path

import numpy as np
import torch

from text_recognizer.datasets.labelled_split import Split
from text_recognizer.datasets.shop_photos import OUT_OF_SCOPE_TARGET, converted_images, labelled_photos
from text_recognizer.labels import OUT_OF_SCOPE, class_index
from text_recognizer.preprocessing import image_bytes_to_views

NO_CLASS = -1  # the label of an out-of-scope photo for a model that has no "Out of scope" class


def photo_label(target: str, class_names: tuple[str, ...]) -> int:
    """The mapped target as a class index; NO_CLASS for out of scope when the model has no such class."""
    if target == OUT_OF_SCOPE_TARGET and OUT_OF_SCOPE not in class_names:
        return NO_CLASS
    return class_index(target, class_names)


@functools.cache  # evaluation and promotion ask for the same split more than once; tensors are shared
def load_photo_split(
    class_names: tuple[str, ...],
    split: str,
    mirror: str | None = None,
    directory: Path | None = None,
    separated_view_side: int = 0,
) -> Split:
    """Photos of `split` (`val` or `test`, or `train`) in `photos.csv` order, with their domains and,
    with `separated_view_side`, their separated views, for a model that averages with them (evaluation
    and promotion ask for them; training does not use them, and GrabCut doubles the conversion's time)."""
    directory, photos = labelled_photos(class_names, splits=(split,), mirror=mirror, directory=directory)
    convert = functools.partial(image_bytes_to_views, separated_view_side=separated_view_side)
    views = converted_images(directory, (item.photo.image for item in photos), convert)
    separated = [views[item.photo.image][-1] for item in photos] if separated_view_side else None
    return Split(
        torch.from_numpy(np.stack([views[item.photo.image][0] for item in photos])),
        torch.tensor([photo_label(item.target, class_names) for item in photos], dtype=torch.int64),
        tuple(item.domain for item in photos),
        None if separated is None else torch.from_numpy(np.stack(separated)),
    )


def oversampled(
    indices: torch.Tensor,
    class_names: tuple[str, ...],
    factors: dict[str, int],
    photos_start: int,
    directory: Path | None = None,
) -> torch.Tensor:
    """Training indices with each shop photo of a domain in `factors` repeated that many times in all.

    The photos' domains come from the export's `photos.csv` (no image is read): a version with shop
    photos holds them from `photos_start` on, in that order, as `data.sh add --shop-photos` wrote them.
    """
    _, photos = labelled_photos(class_names, splits=("train",), directory=directory)
    extra = [
        index
        for index in indices.tolist()
        if 0 <= index - photos_start < len(photos)
        for _ in range(factors.get(photos[index - photos_start].domain, 1) - 1)
    ]
    return torch.cat([indices, torch.tensor(extra, dtype=indices.dtype)])
