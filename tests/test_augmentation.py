"""Batch augmentation: each transform does what it says, and the same generator state repeats it."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from text_recognizer.datasets.idx import read_idx
from training.augmentation import (
    augment,
    horizontal_flip,
    jpeg_reencoding,
    random_affine,
    random_crop,
    random_erasing,
    rotated_and_scaled,
)
from training.config import AugmentationConfig

from .conftest import FIXTURES_DIR

IMAGES = read_idx(FIXTURES_DIR / "t10k-images-idx3-ubyte.gz")[:64]


def generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_random_crop_shifts_within_the_padding() -> None:
    cropped = random_crop(IMAGES, 2, generator())
    assert cropped.shape == IMAGES.shape and cropped.dtype == torch.uint8
    for original, shifted in zip(IMAGES, cropped, strict=True):
        padded = torch.nn.functional.pad(original, (2, 2, 2, 2))
        windows = [padded[dy : dy + 28, dx : dx + 28] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(shifted, window) for window in windows)
    assert not torch.equal(cropped, IMAGES)


def test_horizontal_flip_mirrors_about_half_the_images() -> None:
    flipped = horizontal_flip(IMAGES, generator())
    mirrored = [
        torch.equal(f, o.flip(-1)) and not torch.equal(f, o) for f, o in zip(flipped, IMAGES, strict=True)
    ]
    unchanged = [torch.equal(f, o) for f, o in zip(flipped, IMAGES, strict=True)]
    assert all(m or u for m, u in zip(mirrored, unchanged, strict=True))
    assert 16 < sum(mirrored) < 48


def test_random_erasing_zeroes_one_rectangle_per_chosen_image() -> None:
    erased = random_erasing(IMAGES, 1.0, generator())
    for original, result in zip(IMAGES, erased, strict=True):
        changed = torch.nonzero(original != result)
        assert torch.all(result[original != result] == 0)
        if changed.numel():
            rows, cols = changed[:, 0], changed[:, 1]
            assert (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1) <= 0.2 * 28 * 28 + 28
    assert torch.equal(random_erasing(IMAGES, 0.0, generator()), IMAGES)


def test_random_affine_rotates_and_shrinks_the_chosen_images_about_their_centre() -> None:
    assert torch.equal(random_affine(IMAGES, 0.0, 10.0, (0.8, 1.0), generator()), IMAGES)
    assert torch.equal(random_affine(IMAGES, 1.0, 0.0, (1.0, 1.0), generator()), IMAGES)  # the identity
    quarter = random_affine(IMAGES, 1.0, 0.0, (0.5, 0.5), generator())
    centre = (torch.arange(28) - 13.5).abs() < 7
    assert quarter[:, ~centre, :].sum() == 0 and quarter[:, :, ~centre].sum() == 0  # half size, centred
    assert torch.allclose(quarter.float().sum((1, 2)), IMAGES.float().sum((1, 2)) / 4, rtol=0.05)
    quarter_turns = rotated_and_scaled(IMAGES, torch.full((64,), 90.0), torch.ones(64))
    assert torch.equal(quarter_turns, IMAGES.rot90(1, (-2, -1)))  # every pixel moved exactly, no blur
    back = rotated_and_scaled(IMAGES, torch.full((64,), -90.0), torch.ones(64))
    assert torch.equal(back, IMAGES.rot90(-1, (-2, -1)))
    with pytest.raises(ValueError, match="square"):
        rotated_and_scaled(IMAGES[:, :, :20], torch.zeros(64), torch.ones(64))
    partly = random_affine(IMAGES, 0.5, 10.0, (0.8, 1.0), generator())
    assert 16 < sum(not torch.equal(p, o) for p, o in zip(partly, IMAGES, strict=True)) < 48


def test_augmentation_is_repeatable_and_off_by_default() -> None:
    settings = AugmentationConfig(
        crop_padding=2, horizontal_flip=True, affine_probability=0.5, erasing_probability=0.5,
        jpeg_probability=0.5,
    )  # fmt: skip
    assert torch.equal(augment(IMAGES, settings, generator(3)), augment(IMAGES, settings, generator(3)))
    assert not torch.equal(augment(IMAGES, settings, generator(3)), augment(IMAGES, settings, generator(4)))
    assert torch.equal(augment(IMAGES, AugmentationConfig(), generator()), IMAGES)
    # Off, rotation draws no random numbers: the other augmentations give what they gave before it.
    plain = AugmentationConfig(crop_padding=2, horizontal_flip=True, erasing_probability=0.5)
    same = generator(5)
    expected = random_erasing(horizontal_flip(random_crop(IMAGES, 2, same), same), 0.5, same)
    assert torch.equal(augment(IMAGES, plain, generator(5)), expected)


def test_jpeg_reencoding_gives_what_a_saved_jpeg_decodes_to() -> None:
    reencoded = jpeg_reencoding(IMAGES, 1.0, (85, 85), generator())
    for original, result in zip(IMAGES, reencoded, strict=True):
        buffer = io.BytesIO()
        Image.fromarray(original.numpy()).save(buffer, format="JPEG", quality=85)
        assert torch.equal(result, torch.from_numpy(np.array(Image.open(buffer))))
    assert not torch.equal(reencoded, IMAGES)
    assert torch.equal(jpeg_reencoding(IMAGES, 0.0, (70, 95), generator()), IMAGES)
    partly = jpeg_reencoding(IMAGES, 0.5, (70, 95), generator())
    assert 16 < sum(not torch.equal(p, o) for p, o in zip(partly, IMAGES, strict=True)) < 48


def test_jpeg_quality_and_scale_ranges_are_checked() -> None:
    with pytest.raises(ValidationError, match="jpeg_quality"):
        AugmentationConfig(jpeg_quality=(90, 80))
    with pytest.raises(ValidationError, match="scale must be"):
        AugmentationConfig(scale=(1.0, 0.8))
