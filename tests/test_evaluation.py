"""Evaluation: metric definitions, the evaluate command's outputs, and the promoted model's gates
(accuracy floor on the full test set, the photo domains' floors)."""

import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from release.evaluate import main as evaluate_main
from release.promote import DEFAULT_DOMAIN_FLOORS, DEFAULT_MIN_TEST_ACCURACY, domain_results, floor_problems
from text_recognizer.datasets.fashion_mnist import read_split
from text_recognizer.datasets.labelled_split import Split
from text_recognizer.datasets.shop_photos import DOMAINS
from text_recognizer.evaluation import (
    calibration,
    classification_report,
    confidence_threshold,
    confusion_matrix,
    domain_report,
    fit_temperature,
)
from text_recognizer.labels import OUT_OF_SCOPE
from text_recognizer.models import ClassifierModel
from text_recognizer.preprocessing import SEPARATED_VIEW_SIDE, Normalization
from text_recognizer.promoted import promoted_model_path
from training.calibration import calibrate, choose_out_of_scope_offset

ACCURACY_FLOOR = DEFAULT_MIN_TEST_ACCURACY  # the product's floor, the one promotion enforces


def test_confusion_matrix_rows_are_true_classes() -> None:
    labels, predicted = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([0, 1, 1, 2, 0])
    assert confusion_matrix(labels, predicted, 3).tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_report_per_class_metrics_and_calibration() -> None:
    probabilities = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    report = classification_report(probabilities, torch.tensor([0, 0, 1, 1]), ("a", "b"))
    assert report["accuracy"] == 0.75
    a, b = report["per_class"]
    assert (a["precision"], a["recall"], b["precision"], b["recall"]) == (pytest.approx(2 / 3), 1.0, 1.0, 0.5)
    # Bins: {0.9} all right, {0.8} right, {0.7} right, {0.6} wrong -> |1-0.9|+|1-0.8|+|1-0.7|+|0-0.6|, over 4
    assert report["expected_calibration_error"] == pytest.approx((0.1 + 0.2 + 0.3 + 0.6) / 4)


CLASSES = ("shirt", "bag", "Out of scope")


def test_a_domain_report_counts_what_the_service_answers() -> None:
    """In scope: top-1 accuracy over all images; answered = a class at or above the threshold (not out of
    scope); accuracy when answered over those only."""
    probabilities = torch.tensor([[0.9, 0.1, 0.0], [0.5, 0.4, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    report = domain_report(probabilities, torch.tensor([0, 0, 0, 1]), CLASSES, 0.6, "Out of scope")
    assert report["images"] == 4 and report["accuracy"] == 0.5  # the first two are right
    assert report["answered_with_a_class"] == 0.5  # the first and third; the second unsure, the last out
    assert report["accuracy_when_answered"] == 0.5
    assert report["confusion_rows"] == ["shirt", "bag"]
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 0, 1]]


def test_out_of_scope_items_count_as_right_when_not_given_one_of_the_classes() -> None:
    probabilities = torch.tensor([[0.1, 0.1, 0.8], [0.5, 0.4, 0.1], [0.9, 0.05, 0.05]])
    with_class = domain_report(probabilities, torch.tensor([2, 2, 2]), CLASSES, 0.6, "Out of scope")
    assert with_class["accuracy"] == pytest.approx(2 / 3)  # out of scope, and unsure (0.5 < 0.6)
    assert with_class["confusion_rows"] == ["Out of scope"] and with_class["confusion_matrix"] == [[2, 0, 1]]
    # A model without the class (-1 labels) is judged the same way, by its "unsure" answers alone.
    without = domain_report(
        probabilities[:, :2], torch.tensor([-1, -1, -1]), CLASSES[:2], 0.6, "Out of scope"
    )
    assert without["accuracy"] == pytest.approx(2 / 3) and without["answered_with_a_class"] == pytest.approx(
        1 / 3
    )
    with pytest.raises(ValueError, match="either all in scope or all out of scope"):
        domain_report(probabilities, torch.tensor([0, 2, 2]), CLASSES, 0.6, "Out of scope")


def test_perfect_calibration_has_zero_error() -> None:
    confidences = torch.full((10,), 0.8)
    correct = torch.tensor([True] * 8 + [False] * 2)
    assert calibration(confidences, correct)[0] == pytest.approx(0.0, abs=1e-6)


def test_temperature_undoes_overconfident_and_underconfident_logits() -> None:
    generator = torch.Generator().manual_seed(0)
    calibrated = torch.randn(20_000, 10, generator=generator) * 2
    labels = torch.multinomial(torch.softmax(calibrated, dim=1), 1, generator=generator).squeeze(1)
    assert fit_temperature(calibrated * 3, labels) == pytest.approx(3, rel=0.05)
    assert fit_temperature(calibrated / 2, labels) == pytest.approx(0.5, rel=0.05)


class HalfBrightness(nn.Module):
    """Two classes, "left" and "right": which half of the image is brighter. Mirroring swaps them."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        halves = [images[..., :14].mean(dim=(1, 2, 3)), images[..., 14:].mean(dim=(1, 2, 3))]
        return self.scale * torch.stack(halves, dim=1)


@pytest.mark.parametrize("cue", ["right", "wrong"])
def test_calibration_averages_with_the_mirror_image_only_when_validation_loss_says_so(cue: str) -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 60, (400, 28, 28), dtype=torch.uint8, generator=generator)
    brighter = torch.arange(400) % 2  # 0: the left half, 1: the right half
    images[brighter == 0, :, :14] += 150
    images[brighter == 1, :, 14:] += 150
    labels = brighter if cue == "right" else 1 - brighter  # "wrong": the network's cue misleads it
    model = ClassifierModel(
        "cnn", {"channels": [4, 8]}, (1, 28, 28), ("left", "right"), Normalization(0.4, 0.3)
    )
    model.network = HalfBrightness()
    report = calibrate(model, Split(images, labels))
    chance = math.log(2)  # averaged with its mirror, every image looks the same to this network
    assert report["val_loss_flip_averaged"] == pytest.approx(chance, abs=1e-6)
    assert report["test_time_flip"] is model.test_time_flip is (cue == "wrong")
    if cue == "right":
        assert report["val_loss_plain"] < 0.01 and model.predict(images).class_ids.equal(labels)
    else:
        assert report["val_loss_plain"] > 1 and torch.allclose(
            model.predict(images).confidences, torch.tensor(0.5), atol=1e-4
        )


@pytest.mark.parametrize("separated_cue", ["right", "wrong"])
def test_calibration_averages_with_separated_views_only_when_validation_loss_says_so(
    separated_cue: str,
) -> None:
    """Images with a faint cue, and separated views with a strong one that is right or misleading: the
    separated view is chosen only where it lowers the validation loss, and the model is left with the
    temperature fitted for what was chosen (its validation loss is the lowest reported)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 60, (400, 28, 28), dtype=torch.uint8, generator=generator)
    brighter = torch.arange(400) % 2
    separated = images.clone()
    images[brighter == 0, :, :14] += 3
    images[brighter == 1, :, 14:] += 3
    strong = brighter if separated_cue == "right" else 1 - brighter
    separated[strong == 0, :, :14] += 150
    separated[strong == 1, :, 14:] += 150
    model = ClassifierModel(
        "cnn", {"channels": [4, 8]}, (1, 28, 28), ("left", "right"), Normalization(0.4, 0.3)
    )
    model.network = HalfBrightness()
    val = Split(images, brighter, separated=separated)
    report = calibrate(model, val)
    chosen = separated_cue == "right"
    assert (
        report["separated_view_side"] == model.separated_view_side == (SEPARATED_VIEW_SIDE if chosen else 0)
    )
    assert not model.test_time_flip  # mirrored, this network sees chance
    loss = nn.functional.cross_entropy(model.logits(val.images, separated=val.separated), val.labels).item()
    losses = (report["val_loss_plain"], report["val_loss_separated_view_averaged"])
    assert loss == pytest.approx(min(losses), abs=1e-6)
    assert (report["val_loss_separated_view_averaged"] < report["val_loss_plain"]) is chosen
    # A split whose separated views are its images (no busy border anywhere) does not offer the choice.
    assert "val_loss_separated_view_averaged" not in calibrate(
        model, Split(images, brighter, separated=images)
    )
    assert model.separated_view_side == 0


class LogitTable(nn.Module):
    """Fixed logits per image: image i (every pixel i) gets row i of the table."""

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.tensor(table), requires_grad=False)  # a parameter: the device

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.table[images[:, 0, 0, 0].round().long()]


def test_the_out_of_scope_offset_is_the_one_best_for_the_domains_on_average() -> None:
    """Phone photos of "a" whose out-of-scope logit beats theirs by 0.25, 0.55, 0.95, 2.5; out-of-scope
    items ahead of "a" by 1.0, 1.2, 3.0, 3.0; Fashion-MNIST images right whatever the offset. Mean accuracy
    over the three domains: 2/3 at offset 0, 2.5/3 from 0.6 to 0.9 (phone 2 of 4, out of scope 4 of 4), at
    1.0 and 1.1 (3 and 3), and from 2.6 to 2.9 (4 and 2): the smallest of the best is chosen."""
    rows = [[0, -9, 0.25], [0, -9, 0.55], [0, -9, 0.95], [0, -9, 2.5]]  # phone, class "a"
    rows += [[0, -9, 1.0], [0, -9, 1.2], [0, -9, 3.0], [0, -9, 3.0]]  # out of scope
    rows += [[-9, 5, 0], [-9, 5, 0]]  # Fashion-MNIST, class "b"
    images = torch.arange(10, dtype=torch.uint8)[:, None, None].expand(10, 28, 28).clone()
    labels = torch.tensor([0] * 4 + [2] * 4 + [1] * 2)
    domains = ("phone",) * 4 + ("out-of-scope",) * 4 + ("fashion_mnist",) * 2
    model = ClassifierModel(
        "cnn", {"channels": [4, 8]}, (1, 28, 28), ("a", "b", OUT_OF_SCOPE), Normalization(0, 1 / 255)
    )
    model.network = LogitTable(rows)
    model.out_of_scope_offset = 2.0  # an earlier choice is not what the new one is measured from
    report = choose_out_of_scope_offset(model, Split(images, labels, domains))
    assert report["value"] == model.out_of_scope_offset == 0.6
    assert report["val_accuracy_without"] == {"phone": 0.0, "out-of-scope": 1.0, "fashion_mnist": 1.0}
    assert report["val_accuracy"] == {"phone": 0.5, "out-of-scope": 1.0, "fashion_mnist": 1.0}
    assert model.predict(images).class_ids.tolist() == [0, 0, 2, 2, 2, 2, 2, 2, 1, 1]
    without_out_of_scope = Split(images[labels != 2], labels[labels != 2], domains[:4] + domains[8:])
    assert choose_out_of_scope_offset(model, without_out_of_scope) == {
        "value": 0.0,
        "chosen_on": "not applicable: no out-of-scope images in the validation split",
    }
    assert model.out_of_scope_offset == 0.0


def test_offsets_whose_domains_are_right_as_often_tie_exactly() -> None:
    """Ten phone photos, one of them right from offset 0.6 on; ten out-of-scope items, one of them right
    up to 0.5 and two always: 0/10 + 3/10 below 0.6 and 1/10 + 2/10 from it, the same mean (in floats,
    0.1 + 0.2 is more than 0.3): the tie goes to the smallest offset, 0."""
    rows = [[0, -9, 9.0]] * 9 + [[0, -9, 0.55]]  # phone, class "a"
    rows += [[0, -9, -1.0]] * 7 + [[0, -9, 5.0]] * 2 + [[0, -9, 0.55]]  # out of scope
    images = torch.arange(20, dtype=torch.uint8)[:, None, None].expand(20, 28, 28).clone()
    labels = torch.tensor([0] * 10 + [2] * 10)
    model = ClassifierModel(
        "cnn", {"channels": [4, 8]}, (1, 28, 28), ("a", "b", OUT_OF_SCOPE), Normalization(0, 1 / 255)
    )
    model.network = LogitTable(rows)
    report = choose_out_of_scope_offset(
        model, Split(images, labels, ("phone",) * 10 + ("out-of-scope",) * 10)
    )
    assert report["value"] == 0.0 and report["val_accuracy"] == {"phone": 0.0, "out-of-scope": 0.3}


def test_confidence_threshold_keeps_the_most_confident_until_the_target() -> None:
    confidences = torch.tensor([0.99, 0.95, 0.9, 0.8, 0.6, 0.5])
    correct = torch.tensor([True, True, True, False, True, False])
    assert confidence_threshold(confidences, correct, 1.0) == pytest.approx(0.9)
    assert confidence_threshold(confidences, correct, 0.8) == pytest.approx(0.6)
    assert confidence_threshold(confidences, torch.zeros(6, dtype=torch.bool), 0.5) is None


@pytest.fixture(scope="module")
def promoted() -> ClassifierModel:
    return ClassifierModel.load(promoted_model_path())


@pytest.mark.slow
def test_promoted_model_reaches_its_accuracy_floor(promoted: ClassifierModel, full_data_dir: Path) -> None:
    test = read_split(full_data_dir, "test")
    accuracy = promoted.evaluate(test.images, test.labels)["accuracy"]
    assert accuracy >= ACCURACY_FLOOR, f"test accuracy {accuracy:.4f} is below the floor {ACCURACY_FLOOR}"


@pytest.mark.slow
def test_promoted_model_meets_the_floor_of_every_photo_domain(
    promoted: ClassifierModel, shipped_data_version: str
) -> None:
    """The shipped model's photo test figures, recomputed at its threshold: at or above promotion's
    floors, and the figures its model card (and /v1/metadata) publish."""
    card = json.loads(promoted_model_path().with_name("model_card.json").read_text())
    results = domain_results(promoted, card["confidence_threshold"]["value"], DOMAINS)
    assert floor_problems(results, DEFAULT_DOMAIN_FLOORS) == []
    for domain, result in results.items():
        assert result == pytest.approx(card["domains"][domain]), domain


@pytest.mark.slow
def test_evaluate_command_writes_report_and_rebuilds_the_validation_split(
    shipped_data_version: str, tmp_path: Path
) -> None:
    assert evaluate_main([str(promoted_model_path()), "--split", "val", "--output", str(tmp_path)]) == 0
    output = tmp_path / "val"
    assert sorted(p.name for p in output.iterdir()) == [
        "confusion_catalogue.png", "confusion_matrix.png", "confusion_out-of-scope.png",
        "confusion_phone.png", "confusion_shoes.png", "metrics.json", "mistakes.png",
        "reliability.png"]  # fmt: skip
    for plot in output.glob("*.png"):
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    report = json.loads((output / "metrics.json").read_text())
    card = json.loads(promoted_model_path().with_name("model_card.json").read_text())
    # The same held-out images as in training: Fashion-MNIST's 5,000 and the photo validation split.
    assert report["images"] == 5000
    assert sum(result["images"] for result in report["domains"].values()) == card["data"]["val_images"]
    assert len(report["per_class"]) == len(card["classes"]) == 11
    assert len(report["most_confident_mistakes"]) == 24
    assert sum(map(sum, report["confusion_matrix"])) == 5000
    # Every domain is reported apart, with the model card's "unsure" threshold.
    assert list(report["domains"]) == ["fashion_mnist", "catalogue", "shoes", "phone", "out-of-scope"]
    assert report["unsure_below"] == card["confidence_threshold"]["value"]
    assert report["domains"]["fashion_mnist"]["accuracy"] == report["accuracy"]
    for domain, result in report["domains"].items():
        assert sum(map(sum, result["confusion_matrix"])) == result["images"] > 0, domain
