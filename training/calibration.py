"""Calibrating a model on its validation split: whether it averages each image with its mirror image, the
temperature its confidences are divided by, and the confidence below which the service answers "unsure".
Promotion stores all three; evaluation of a run that has not been promoted computes them the same way, so
its figures are what serving would give.
"""

import math
from typing import Any

import torch

from text_recognizer.datasets.labelled_split import Split
from text_recognizer.evaluation import calibration, confidence_threshold, fit_temperature
from text_recognizer.models import ClassifierModel

DEFAULT_UNSURE_TARGET_ACCURACY = 0.97
# A threshold that leaves fewer validation images answered than this would make the service answer
# "unsure" to most uploads: refused rather than served.
MIN_ANSWERED_SHARE = 0.5


class CalibrationError(ValueError):
    """No usable "unsure" threshold: the model is not accurate enough for the target on validation."""


def calibrate(model: ClassifierModel, val: Split) -> dict[str, Any]:
    """Choose on the validation split whether the model averages each image with its mirror image
    (`test_time_flip`: kept when it lowers the validation loss, each way at its own best temperature),
    set the temperature that fits best (see `fit_temperature`), and report both choices."""
    model.temperature = 1.0
    losses, fitted = {}, {}
    for flip in (False, True):
        model.test_time_flip = flip
        logits = model.logits(val.images)
        temperature = fit_temperature(logits, val.labels)
        losses[flip] = torch.nn.functional.cross_entropy(logits / temperature, val.labels).item()
        fitted[flip] = (logits, temperature)
    model.test_time_flip = losses[True] < losses[False]
    logits, model.temperature = fitted[model.test_time_flip]
    return {
        "temperature": model.temperature,
        "test_time_flip": model.test_time_flip,
        "chosen_on": "validation split",
        "val_loss_plain": losses[False],
        "val_loss_flip_averaged": losses[True],
        "val_ece_before": expected_calibration_error(logits, val.labels),
        "val_ece_after": expected_calibration_error(logits / model.temperature, val.labels),
    }


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor) -> float:
    confidences, predicted = torch.softmax(logits, dim=1).max(dim=1)
    return calibration(confidences, predicted == labels)[0]


def unsure_threshold(model: ClassifierModel, val: Split, target_accuracy: float) -> dict[str, Any]:
    """The confidence below which the service answers "unsure", chosen on the validation split so that
    the predictions it keeps reach `target_accuracy`; refused when it would leave fewer than
    `MIN_ANSWERED_SHARE` of the images answered (or none at all)."""
    confidences, predicted = torch.softmax(model.logits(val.images), dim=1).max(dim=1)
    correct = predicted == val.labels
    value = confidence_threshold(confidences, correct, target_accuracy)
    kept = confidences >= (value if value is not None else math.inf)
    answered = kept.double().mean().item()
    if answered < MIN_ANSWERED_SHARE:
        raise CalibrationError(
            f"no usable 'unsure' threshold: for {target_accuracy:.1%} accurate answers the service would "
            f"answer only {answered:.1%} of the validation images (validation "
            f"accuracy {correct.double().mean().item():.1%}); promote a better model or lower "
            "--unsure-target-accuracy"
        )
    assert value is not None
    return {
        "value": value,
        "target_accuracy": target_accuracy,
        "chosen_on": "validation split",
        "val_coverage": answered,
        "val_accuracy_when_sure": correct[kept].double().mean().item(),
    }
