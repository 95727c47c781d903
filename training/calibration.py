"""Calibrating a model on its validation split: whether it averages each image with its mirror image, the
temperature its confidences are divided by, how readily it calls an item out of scope, and the confidence
below which the service answers "unsure". Promotion stores all four; evaluation of a run that has not been
promoted computes them the same way, so its figures are what serving would give.
"""

import math
from fractions import Fraction
from typing import Any

import torch

from text_recognizer.datasets.labelled_split import Split
from text_recognizer.evaluation import calibration, confidence_threshold, fit_temperature
from text_recognizer.labels import OUT_OF_SCOPE
from text_recognizer.models import ClassifierModel
from text_recognizer.preprocessing import SEPARATED_VIEW_SIDE

DEFAULT_UNSURE_TARGET_ACCURACY = 0.97
# A threshold that leaves fewer validation images answered than this would make the service answer
# "unsure" to most uploads: refused rather than served.
MIN_ANSWERED_SHARE = 0.5
# The out-of-scope offsets tried (on logits after the temperature): 0 to 4 in steps of 0.1, fixed before
# the first measurement.
OUT_OF_SCOPE_OFFSETS = tuple(step / 10 for step in range(41))


class CalibrationError(ValueError):
    """No usable "unsure" threshold: the model is not accurate enough for the target on validation."""


def calibrate(model: ClassifierModel, val: Split) -> dict[str, Any]:
    """Choose on the validation split whether the model averages each image with its mirror image
    (`test_time_flip`), then whether it averages photos with their separated views
    (`separated_view_side`, where the split has them): each kept when it lowers the validation loss, each
    way at its own best temperature. Set the temperature that fits best (see `fit_temperature`), and
    report the choices."""
    model.out_of_scope_offset = 0.0
    flips = {flip: fitted_loss(model, val, test_time_flip=flip) for flip in (False, True)}
    flip = flips[True][0] < flips[False][0]
    report: dict[str, Any] = {
        "val_loss_plain": flips[False][0],
        "val_loss_flip_averaged": flips[True][0],
    }
    side, (loss, logits, temperature) = 0, flips[flip]
    if val.separated is not None and not torch.equal(val.separated, val.images):
        separated = fitted_loss(model, val, test_time_flip=flip, side=SEPARATED_VIEW_SIDE)
        report["val_loss_separated_view_averaged"] = separated[0]
        if separated[0] < loss:
            side, (loss, logits, temperature) = SEPARATED_VIEW_SIDE, separated
    model.test_time_flip, model.separated_view_side, model.temperature = flip, side, temperature
    return report | {
        "temperature": model.temperature,
        "test_time_flip": model.test_time_flip,
        "separated_view_side": model.separated_view_side,
        "chosen_on": "validation split",
        "val_ece_before": expected_calibration_error(logits, val.labels),
        "val_ece_after": expected_calibration_error(logits / model.temperature, val.labels),
    }


def fitted_loss(
    model: ClassifierModel, val: Split, test_time_flip: bool, side: int = 0
) -> tuple[float, torch.Tensor, float]:
    """The validation loss at the best temperature with these choices, the logits at temperature 1, and
    that temperature."""
    model.test_time_flip, model.separated_view_side, model.temperature = test_time_flip, side, 1.0
    logits = model.logits(val.images, separated=val.separated)
    temperature = fit_temperature(logits, val.labels)
    return torch.nn.functional.cross_entropy(logits / temperature, val.labels).item(), logits, temperature


def choose_out_of_scope_offset(model: ClassifierModel, val: Split) -> dict[str, Any]:
    """Set the offset subtracted from the out-of-scope logit to the one, of `OUT_OF_SCOPE_OFFSETS`, with
    the best mean top-1 accuracy over the validation split's domains, each domain counting the same
    (Fashion-MNIST, catalogue shots, studio shoes, phone photos, and out-of-scope items, right when their
    top class is out of scope); the smallest on a tie. 0 where the model has no out-of-scope class or the
    split no out-of-scope images.

    Why: the network learns how often an item is out of scope from its training mix, where most photos
    are catalogue shots; a phone photo of a shirt on a bed, unlike any of them, was called out of scope
    more often than the out-of-scope domain needs. The product is judged domain by domain."""
    model.out_of_scope_offset = 0.0
    if OUT_OF_SCOPE not in model.class_names:
        return {"value": 0.0, "chosen_on": "not applicable: the model has no out-of-scope class"}
    out_of_scope = model.class_names.index(OUT_OF_SCOPE)
    if not (val.labels == out_of_scope).any():
        return {"value": 0.0, "chosen_on": "not applicable: no out-of-scope images in the validation split"}
    logits = model.logits(val.images, separated=val.separated)
    names = val.domain_names()
    domains = {domain: torch.tensor([name == domain for name in names]) for domain in dict.fromkeys(names)}

    def right(offset: float) -> dict[str, Fraction]:
        """Each domain's share of right answers, as an exact fraction: sums of rounded floats would
        break a tie between offsets the wrong way."""
        shifted = logits.clone()
        shifted[:, out_of_scope] -= offset
        correct = shifted.argmax(dim=1) == val.labels
        return {
            domain: Fraction(int(correct[mask].sum()), int(mask.sum())) for domain, mask in domains.items()
        }

    tried = {offset: right(offset) for offset in OUT_OF_SCOPE_OFFSETS}
    best = max(OUT_OF_SCOPE_OFFSETS, key=lambda offset: (sum(tried[offset].values()), -offset))
    model.out_of_scope_offset = best
    return {
        "value": best,
        "chosen_on": "validation split",
        "rule": "best mean top-1 accuracy over the validation domains, offsets 0 to 4 in steps of 0.1",
        "val_accuracy": {domain: float(share) for domain, share in tried[best].items()},
        "val_accuracy_without": {domain: float(share) for domain, share in tried[0.0].items()},
    }


def expected_calibration_error(logits: torch.Tensor, labels: torch.Tensor) -> float:
    confidences, predicted = torch.softmax(logits, dim=1).max(dim=1)
    return calibration(confidences, predicted == labels)[0]


def unsure_threshold(model: ClassifierModel, val: Split, target_accuracy: float) -> dict[str, Any]:
    """The confidence below which the service answers "unsure", chosen on the validation split so that
    the predictions it keeps reach `target_accuracy`; refused when it would leave fewer than
    `MIN_ANSWERED_SHARE` of the images answered (or none at all)."""
    probabilities = torch.softmax(model.logits(val.images, separated=val.separated), dim=1)
    confidences, predicted = probabilities.max(dim=1)
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
