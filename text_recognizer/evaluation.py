"""Classification metrics from predicted probabilities: per-class precision/recall/F1, the confusion
matrix, expected calibration error, the confidence threshold below which a model should say "unsure",
and what the service would answer on one domain of photos.
"""

from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class CalibrationBin:
    lower: float
    upper: float
    count: int
    accuracy: float
    confidence: float


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Counts with true classes as rows and predicted classes as columns."""
    flat = labels.long() * num_classes + predicted.long()
    return torch.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def per_class_metrics(confusion: torch.Tensor, class_names: tuple[str, ...]) -> list[dict[str, Any]]:
    true_positive = confusion.diag().double()
    predicted = confusion.sum(dim=0).double()
    actual = confusion.sum(dim=1).double()
    precision = true_positive / predicted.clamp(min=1)
    recall = true_positive / actual.clamp(min=1)
    f1 = 2 * precision * recall / (precision + recall).clamp(min=1e-12)
    return [
        {"class": name, "precision": p, "recall": r, "f1": f, "support": int(s)}
        for name, p, r, f, s in zip(
            class_names, precision.tolist(), recall.tolist(), f1.tolist(), actual.tolist(), strict=True
        )
    ]


def calibration(
    confidences: torch.Tensor, correct: torch.Tensor, bins: int = 15
) -> tuple[float, list[CalibrationBin]]:
    """Expected calibration error over equal-width confidence bins, and the bins (for a reliability plot)."""
    edges = torch.linspace(0, 1, bins + 1)
    result, error = [], 0.0
    for lower, upper in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
        in_bin = (confidences > lower) & (confidences <= upper)
        count = int(in_bin.sum())
        if count == 0:
            result.append(CalibrationBin(lower, upper, 0, 0.0, 0.0))
            continue
        accuracy = correct[in_bin].double().mean().item()
        confidence = confidences[in_bin].double().mean().item()
        error += count / confidences.numel() * abs(accuracy - confidence)
        result.append(CalibrationBin(lower, upper, count, accuracy, confidence))
    return error, result


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Temperature scaling: the T that minimises the cross-entropy of `logits / T` (meant for the
    validation split). It changes confidences, never which class wins. A grid from 0.1 to 10 in steps of
    about 0.6% keeps the choice deterministic."""
    temperatures = torch.logspace(-1, 1, 801, dtype=torch.float64)
    losses = [torch.nn.functional.cross_entropy(logits.double() / t, labels) for t in temperatures]
    return float(temperatures[int(torch.stack(losses).argmin())])


def confidence_threshold(
    confidences: torch.Tensor, correct: torch.Tensor, target_accuracy: float
) -> float | None:
    """The lowest confidence threshold at which the predictions kept reach `target_accuracy`, or None
    when even the most confident prediction alone does not.

    Meant to be chosen on the validation split: below it, a service answers "unsure".
    """
    order = torch.argsort(confidences, descending=True)
    kept_accuracy = correct[order].double().cumsum(0) / torch.arange(1, order.numel() + 1)
    meeting = torch.nonzero(kept_accuracy >= target_accuracy).flatten()
    if meeting.numel() == 0:
        return None
    return float(confidences[order][meeting.max()])


def classification_report(
    probabilities: torch.Tensor, labels: torch.Tensor, class_names: tuple[str, ...]
) -> dict[str, Any]:
    confidences, predicted = probabilities.max(dim=1)
    correct = predicted == labels
    confusion = confusion_matrix(labels, predicted, len(class_names))
    ece, bins = calibration(confidences, correct)
    return {
        "images": int(labels.numel()),
        "accuracy": correct.double().mean().item(),
        "loss": torch.nn.functional.nll_loss(probabilities.clamp(min=1e-12).log(), labels).item(),
        "expected_calibration_error": ece,
        "per_class": per_class_metrics(confusion, class_names),
        "confusion_matrix": confusion.tolist(),
        "calibration_bins": [asdict(b) for b in bins],
    }


def service_answers(
    probabilities: torch.Tensor, class_names: tuple[str, ...], unsure_below: float | None, out_of_scope: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted class, answered): answered means the service names one of the in-scope classes, that is,
    the top class is not `out_of_scope` and its confidence reaches `unsure_below`."""
    confidences, predicted = probabilities.max(dim=1)
    answered = confidences >= (unsure_below or 0.0)
    if out_of_scope in class_names:
        answered &= predicted != class_names.index(out_of_scope)
    return predicted, answered


def domain_report(
    probabilities: torch.Tensor,
    labels: torch.Tensor,
    class_names: tuple[str, ...],
    unsure_below: float | None,
    out_of_scope: str,
) -> dict[str, Any]:
    """One domain as the service would answer it. For in-scope images: top-1 accuracy, the share answered
    with a class at the "unsure" threshold and the accuracy of those answers. For out-of-scope images
    (labelled `out_of_scope`, or -1 for a model without that class): `accuracy` is the share answered
    "not one of the ten" (out of scope or unsure). Rows of the confusion matrix are the true classes
    present; columns every class the model has."""
    predicted, answered = service_answers(probabilities, class_names, unsure_below, out_of_scope)
    outside = labels < 0
    if out_of_scope in class_names:
        outside |= labels == class_names.index(out_of_scope)
    if outside.any() and not outside.all():
        raise ValueError("a domain is either all in scope or all out of scope")
    report: dict[str, Any] = {
        "images": int(labels.numel()),
        "unsure_below": unsure_below,
        "answered_with_a_class": answered.double().mean().item(),
    }
    if outside.all():
        report["accuracy"] = (~answered).double().mean().item()
        report["confusion_rows"] = [out_of_scope]
        report["confusion_matrix"] = [torch.bincount(predicted, minlength=len(class_names)).tolist()]
        return report
    correct = predicted == labels
    present = torch.unique(labels).tolist()
    confusion = confusion_matrix(labels, predicted, len(class_names))
    report["accuracy"] = correct.double().mean().item()
    report["accuracy_when_answered"] = correct[answered].double().mean().item() if answered.any() else None
    report["confusion_rows"] = [class_names[index] for index in present]
    report["confusion_matrix"] = confusion[present].tolist()
    return report
