"""Turning uint8 images into network input: the one place training, evaluation and serving share."""

from dataclasses import asdict, dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Normalization:
    """Per-dataset pixel statistics (on the 0..1 scale), computed from the training split only."""

    mean: float
    std: float

    @classmethod
    def fit(cls, images: torch.Tensor) -> "Normalization":
        pixels = images.double() / 255.0
        return cls(mean=float(pixels.mean()), std=float(pixels.std()))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def as_image_batch(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Accept (H, W), (N, H, W) or (N, 1, H, W) uint8 images; return a (N, 1, H, W) uint8 tensor."""
    batch = torch.as_tensor(images)
    if batch.dtype != torch.uint8:
        raise TypeError(f"images must be uint8 (0..255), got {batch.dtype}")
    if batch.dim() == 2:
        batch = batch.unsqueeze(0)
    if batch.dim() == 3:
        batch = batch.unsqueeze(1)
    if batch.dim() != 4 or batch.shape[1] != 1:
        raise ValueError(
            f"expected (H, W), (N, H, W) or (N, 1, H, W) grayscale images, got {tuple(batch.shape)}"
        )
    return batch


def normalize(images: torch.Tensor, normalization: Normalization) -> torch.Tensor:
    """Scale a uint8 (N, 1, H, W) batch to float and standardize it with the training statistics."""
    return (images.float() / 255.0 - normalization.mean) / normalization.std
