"""Batch augmentation on uint8 image tensors: random crop with padding, horizontal flip, random
rotation and scaling, random erasing, JPEG re-encoding.

Vectorized over the batch and driven by an explicit generator, so a run (and a resumed run) sees the
same augmented images for the same seed and epoch.
"""

import math

import numpy as np
import torch

from text_recognizer.behaviour import jpeg_roundtrip
from training.config import AugmentationConfig


def random_crop(images: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each (H, W) image by up to `padding` pixels in each direction, filling with zeros."""
    count, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    offsets = torch.randint(0, 2 * padding + 1, (2, count), generator=generator).to(images.device)
    rows = (torch.arange(height, device=images.device) + offsets[0, :, None])[:, :, None]
    cols = (torch.arange(width, device=images.device) + offsets[1, :, None])[:, None, :]
    batch = torch.arange(count, device=images.device)[:, None, None]
    return padded[batch, rows, cols]


def horizontal_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    flip = (torch.rand(images.shape[0], generator=generator) < 0.5).to(images.device)
    return torch.where(flip[:, None, None], images.flip(-1), images)


def random_affine(
    images: torch.Tensor,
    probability: float,
    degrees: float,
    scale: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """Rotate each image with `probability` by up to `degrees` either way and scale it by a factor drawn
    from `scale`, about its centre (`rotated_and_scaled`). A phone photo's item lies at any angle and,
    where the trim stops at a busy background, smaller in the frame than in a catalogue shot;
    Fashion-MNIST's items are upright and fill it."""
    count = images.shape[0]
    chosen = torch.rand(count, generator=generator) < probability
    angles = torch.empty(count).uniform_(-degrees, degrees, generator=generator)
    factors = torch.empty(count).uniform_(*scale, generator=generator)
    if not chosen.any():
        return images
    rows = torch.nonzero(chosen).flatten().to(images.device)
    result = images.clone()
    result[rows] = rotated_and_scaled(images[rows], angles[chosen], factors[chosen])
    return result


def rotated_and_scaled(images: torch.Tensor, degrees: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """Each square uint8 (H, W) image turned by its angle and scaled by its factor about its centre
    (bilinear, zeros outside: the converted photos' background is black). The rotation is made in the
    sampling grid's coordinates, which are normalised per axis: right for square images only."""
    if images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation needs square images, got {tuple(images.shape[-2:])}")
    radians = degrees * math.pi / 180
    cos, sin = torch.cos(radians) / factors, torch.sin(radians) / factors  # output -> input coordinates
    zeros = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zeros], 1), torch.stack([sin, cos, zeros], 1)], 1)
    selected = images.unsqueeze(1).float()
    grid = torch.nn.functional.affine_grid(theta.to(images.device), list(selected.shape), align_corners=False)
    warped = torch.nn.functional.grid_sample(selected, grid, align_corners=False)
    return warped.squeeze(1).round().clamp(0, 255).to(torch.uint8)


def random_erasing(
    images: torch.Tensor,
    probability: float,
    generator: torch.Generator,
    area: tuple[float, float] = (0.02, 0.2),
) -> torch.Tensor:
    """Zero a random rectangle (2-20% of the image, aspect 0.3-3.3) in each image with `probability`."""
    count, height, width = images.shape
    erase = torch.rand(count, generator=generator) < probability
    target_area = torch.empty(count).uniform_(*area, generator=generator) * height * width
    log_ratio = torch.empty(count).uniform_(math.log(0.3), math.log(1 / 0.3), generator=generator)
    ratio = torch.exp(log_ratio)
    box_height = torch.sqrt(target_area * ratio).round().clamp(1, height).long()
    box_width = torch.sqrt(target_area / ratio).round().clamp(1, width).long()
    top = (torch.rand(count, generator=generator) * (height - box_height + 1)).long()
    left = (torch.rand(count, generator=generator) * (width - box_width + 1)).long()
    rows = torch.arange(height)[None, :]
    cols = torch.arange(width)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + box_height)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + box_width)[:, None])
    mask = (in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None]).to(images.device)
    return images.masked_fill(mask, 0)


def jpeg_reencoding(
    images: torch.Tensor, probability: float, quality: tuple[int, int], generator: torch.Generator
) -> torch.Tensor:
    """Save each image with `probability` as a JPEG of a quality drawn from `quality` (inclusive) and
    decode it again: the product receives JPEGs, whose artefacts should not change an answer."""
    chosen = torch.rand(images.shape[0], generator=generator) < probability
    qualities = torch.randint(quality[0], quality[1] + 1, (images.shape[0],), generator=generator)
    if not chosen.any():
        return images
    rows = torch.nonzero(chosen).flatten().to(images.device)
    pairs = zip(images[rows].cpu().numpy(), qualities[chosen].tolist(), strict=True)
    reencoded = np.stack([jpeg_roundtrip(image, level) for image, level in pairs])
    result = images.clone()
    result[rows] = torch.from_numpy(reencoded).to(images.device)
    return result


def augment(images: torch.Tensor, settings: AugmentationConfig, generator: torch.Generator) -> torch.Tensor:
    """Apply the configured augmentations to a uint8 (N, H, W) batch."""
    if settings.crop_padding:
        images = random_crop(images, settings.crop_padding, generator)
    if settings.horizontal_flip:
        images = horizontal_flip(images, generator)
    if settings.affine_probability:
        images = random_affine(
            images, settings.affine_probability, settings.rotation_degrees, settings.scale, generator
        )
    if settings.erasing_probability:
        images = random_erasing(images, settings.erasing_probability, generator)
    if settings.jpeg_probability:
        images = jpeg_reencoding(images, settings.jpeg_probability, settings.jpeg_quality, generator)
    return images
