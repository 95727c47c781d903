"""Behaviour checks (Made With ML style) on a model's answers to perturbed images: JPEG re-encoding
should change few of them, and blacking out the item's centre should lower confidence in its class.

One definition for both uses: promotion holds a candidate to the bars on its validation images, before
any test split is read, and the behaviour tests hold the shipped model to them on test images.
"""

import io
from typing import Any

import numpy as np
import torch
from PIL import Image

from text_recognizer.models import ClassifierModel, Predictions

JPEG_QUALITY = 85  # a web shop's usual re-encoding
OCCLUDED_ROWS = OCCLUDED_COLUMNS = slice(6, 22)  # the centre 16x16 pixels, where a 28x28 item is
# The bars: at most this share of answers changed by JPEG re-encoding; at least this share of images
# whose true-class confidence falls under occlusion. Set a little past what the photo model of the time
# measured on the behaviour tests' test images (3.6% changed).
DEFAULT_BEHAVIOUR_BARS = {"jpeg-changed": 0.04, "occlusion-lowered": 0.70}
AT_MOST = ("jpeg-changed",)  # the other bars are floors


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """A grey uint8 image as a JPEG of `quality` decodes it."""
    if image.dtype != np.uint8 or image.ndim != 2:
        raise ValueError(f"a grey uint8 image is needed, got {image.dtype} of shape {image.shape}")
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.array(Image.open(buffer))


def jpeg_reencoded(images: torch.Tensor, quality: int = JPEG_QUALITY) -> torch.Tensor:
    return torch.from_numpy(np.stack([jpeg_roundtrip(image.numpy(), quality) for image in images.cpu()]))


def occluded(images: torch.Tensor) -> torch.Tensor:
    result = images.clone()
    result[:, OCCLUDED_ROWS, OCCLUDED_COLUMNS] = 0
    return result


def changed_share(
    model: ClassifierModel,
    original: torch.Tensor,
    perturbed: torch.Tensor,
    answers: Predictions | None = None,
) -> float:
    """The share of images whose answer (top class) differs between `original` and `perturbed`
    (`answers`: the model's answers to `original`, where already known)."""
    before = answers if answers is not None else model.predict(original)
    return (before.class_ids != model.predict(perturbed).class_ids).double().mean().item()


def occlusion_lowered_share(
    model: ClassifierModel, images: torch.Tensor, labels: torch.Tensor, answers: Predictions | None = None
) -> float:
    """The share of images whose true-class probability falls when the item's centre is blacked out
    (`answers`: the model's answers to `images`, where already known)."""
    rows = torch.arange(len(labels))
    before = (answers if answers is not None else model.predict(images)).probabilities[rows, labels]
    after = model.predict(occluded(images)).probabilities[rows, labels]
    return (after < before).double().mean().item()


def behaviour_report(model: ClassifierModel, images: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    answers = model.predict(images)  # once, for both checks
    return {
        "images": len(labels),
        "jpeg_quality": JPEG_QUALITY,
        "jpeg-changed": changed_share(model, images, jpeg_reencoded(images), answers),
        "occlusion-lowered": occlusion_lowered_share(model, images, labels, answers),
    }


def behaviour_problems(report: dict[str, Any], bars: dict[str, float]) -> list[str]:
    """Every bar the report misses, named with its figure."""
    problems = []
    for name, bar in sorted(bars.items()):
        value = report[name]
        if value > bar if name in AT_MOST else value < bar:
            side = "over its ceiling" if name in AT_MOST else "under its floor"
            problems.append(f"{name} {value:.4f} is {side} {bar:.4f}")
    return problems
