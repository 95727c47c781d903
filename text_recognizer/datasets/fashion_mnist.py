"""Fashion-MNIST in memory: a verified data version, idx parsing, seeded stratified validation split.

Images stay uint8 tensors (N, 28, 28) end to end; conversion to float happens per batch in
`text_recognizer.preprocessing`. The test split is exposed for final evaluation only.
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from text_recognizer.datasets.idx import read_idx
from text_recognizer.datasets.splits import stratified_sample
from text_recognizer.datasets.versions import OFFICIAL_VERSION, SPLIT_FILES, resolve_version
from text_recognizer.preprocessing import Normalization

INPUT_SHAPE = (1, 28, 28)


@dataclass(frozen=True)
class Split:
    images: torch.Tensor  # uint8 (N, 28, 28)
    labels: torch.Tensor  # int64 (N,)

    def __len__(self) -> int:
        return self.labels.numel()

    def subset(self, indices: torch.Tensor) -> "Split":
        return Split(self.images[indices], self.labels[indices])


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
) -> DatasetSplits:
    """Load a data version (verified byte for byte), then hold out a stratified validation split.

    `train_size` keeps a stratified subset of the remaining training images (for smoke runs).
    Normalization statistics come from the training split that is actually trained on.
    """
    record, directory = resolve_version(version, expected_hash=version_hash, mirror=mirror, raw_dir=raw_dir)
    full_train = read_split(directory, "train")
    val_indices, train_indices = stratified_sample(full_train.labels, val_size, split_seed)
    train = full_train.subset(train_indices)
    if train_size is not None and train_size < len(train):
        kept, _ = stratified_sample(train.labels, train_size, split_seed)
        train = train.subset(kept)
    return DatasetSplits(
        train=train,
        val=full_train.subset(val_indices),
        test=read_split(directory, "test"),
        class_names=record.class_names,
        normalization=Normalization.fit(train.images),
        checksums=record.files,
        version=record.name,
        version_hash=record.sha256,
    )
