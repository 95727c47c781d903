"""Fashion-MNIST in memory: a verified data version, idx parsing, seeded stratified validation split.

Images stay uint8 tensors (N, 28, 28) end to end; conversion to float happens per batch in
`text_recognizer.preprocessing`. The test split is exposed for final evaluation only.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from text_recognizer.datasets.idx import read_idx
from text_recognizer.datasets.labelled_split import Split
from text_recognizer.datasets.photo_sets import load_photo_split, oversampled
from text_recognizer.datasets.splits import stratified_sample
from text_recognizer.datasets.versions import (
    OFFICIAL_VERSION,
    SPLIT_FILES,
    DataVersionError,
    resolve_version,
)
from text_recognizer.preprocessing import Normalization

INPUT_SHAPE = (1, 28, 28)
OFFICIAL_TRAIN_IMAGES = 60_000  # the release's training images: later versions append after them


@dataclass(frozen=True)
class DatasetSplits:
    """Train, validation and test splits plus what a model needs to know about the data."""

    train: Split
    val: Split
    test: Split
    class_names: tuple[str, ...]
    normalization: Normalization
    checksums: dict[str, str]
    version: str
    version_hash: str
    input_shape: tuple[int, int, int] = INPUT_SHAPE


def read_split(directory: Path, split: str) -> Split:
    images_file, labels_file = SPLIT_FILES[split]
    images = read_idx(directory / images_file)
    labels = read_idx(directory / labels_file).long()
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{split}: {images.shape[0]} images but {labels.shape[0]} labels")
    return Split(images, labels)


def load_fashion_mnist(
    *,
    version: str = OFFICIAL_VERSION,
    version_hash: str | None = None,
    val_size: int = 5000,
    train_size: int | None = None,
    split_seed: int = 0,
    mirror: str | None = None,
    raw_dir: Path | None = None,
    photo_validation: bool = True,
    oversample: dict[str, int] | None = None,
    separated_view_side: int = 0,
) -> DatasetSplits:
    """Load a data version (verified byte for byte), then hold out a stratified validation split.

    The hold-out is drawn from the release's own 60,000 training images, never from images a later
    version appended. A version with shop photos validates on the photo validation split too (converted by
    the serving preprocessing; see `photo_sets`); its test split is Fashion-MNIST's, and the photo test
    split is read apart, once, after training.
    `photo_validation=False` leaves the photos out, for callers that read only the test split;
    `separated_view_side` gives the validation photos their separated views (`load_photo_split`).
    `train_size` keeps a stratified subset of the remaining training images (for smoke runs).
    `oversample` repeats the training photos of some domains (`{"phone": 3}`: each phone photo 3 times).
    Normalization statistics come from the training split that is actually trained on.
    """
    record, directory = resolve_version(version, expected_hash=version_hash, mirror=mirror, raw_dir=raw_dir)
    full_train = read_split(directory, "train")
    official = min(len(full_train), OFFICIAL_TRAIN_IMAGES)
    val_indices, _ = stratified_sample(full_train.labels[:official], val_size, split_seed)
    held_out = torch.zeros(len(full_train), dtype=torch.bool)
    held_out[val_indices] = True
    indices = torch.nonzero(~held_out).flatten()
    if train_size is not None and train_size < len(indices):
        kept, _ = stratified_sample(full_train.labels[indices], train_size, split_seed)
        indices = indices[kept]
    if oversample:
        if not record.has_shop_photos:
            raise DataVersionError(f"{record.name} has no shop photos to oversample ({oversample})")
        indices = oversampled(indices, record.class_names, oversample, photos_start=official)
    train = full_train.subset(indices)
    val = full_train.subset(val_indices)
    if photo_validation and record.has_shop_photos:
        val = val + load_photo_split(record.class_names, "val", separated_view_side=separated_view_side)
    return DatasetSplits(
        train=train,
        val=val,
        test=read_split(directory, "test"),
        class_names=record.class_names,
        normalization=Normalization.fit(train.images),
        checksums=record.files,
        version=record.name,
        version_hash=record.sha256,
    )
