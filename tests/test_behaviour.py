"""Model behaviour (Made With ML style): invariance, minimum functionality and a directional check,
on the promoted model and real Fashion-MNIST test images."""

from pathlib import Path

import pytest
import torch

from api.predictor import Predictor
from text_recognizer.behaviour import (
    DEFAULT_BEHAVIOUR_BARS,
    changed_share,
    jpeg_reencoded,
    occlusion_lowered_share,
)
from text_recognizer.datasets.fashion_mnist import read_split
from text_recognizer.datasets.shop_photos import OUT_OF_SCOPE_TARGET, iter_image_bytes, labelled_photos
from text_recognizer.models import ClassifierModel
from text_recognizer.preprocessing import DEFAULT_MAX_PIXELS
from text_recognizer.promoted import promoted_model_path

from .conftest import FIXTURES_DIR
from .support.fixture_model import SHOP_FIXTURES


@pytest.fixture(scope="module")
def model() -> ClassifierModel:
    return ClassifierModel.load(promoted_model_path())


@pytest.fixture(scope="module")
def test_images(full_data_dir: Path) -> torch.Tensor:
    return read_split(full_data_dir, "test").images[:1000]


@pytest.mark.slow
@pytest.mark.parametrize("shift", [(1, 0), (-1, 0), (0, 1), (0, -1)], ids=["down", "up", "right", "left"])
def test_one_pixel_shift_changes_few_predictions(
    model: ClassifierModel, test_images: torch.Tensor, shift: tuple[int, int]
) -> None:
    share = changed_share(model, test_images, torch.roll(test_images, shift, dims=(1, 2)))
    assert share <= 0.10, f"a one-pixel shift changed {share:.1%} of 1,000 predictions"


@pytest.mark.slow
@pytest.mark.parametrize("factor", [0.85, 1.15])
def test_brightness_changes_few_predictions(
    model: ClassifierModel, test_images: torch.Tensor, factor: float
) -> None:
    brighter = (test_images.float() * factor).clamp(0, 255).round().to(torch.uint8)
    share = changed_share(model, test_images, brighter)
    assert share <= 0.03, f"brightness x{factor} changed {share:.1%} of 1,000 predictions"


@pytest.mark.slow
def test_jpeg_reencoding_changes_few_predictions(model: ClassifierModel, test_images: torch.Tensor) -> None:
    share = changed_share(model, test_images, jpeg_reencoded(test_images))
    # 3.6% for the photo model (the Fashion-MNIST-only model stayed under 3%): all between upper-body
    # garments (pullover/coat/shirt/T-shirt), none to "Out of scope". Measured, then the bar set at 4%.
    bar = DEFAULT_BEHAVIOUR_BARS["jpeg-changed"]
    assert share <= bar, f"JPEG re-encoding (quality 85) changed {share:.1%} of 1,000 predictions"


def test_minimum_functionality_on_clear_examples_of_every_class(model: ClassifierModel) -> None:
    """The first ten test images of each class (the committed fixture): each class mostly right."""
    split = read_split(FIXTURES_DIR, "test")
    predicted = model.predict(split.images).class_ids
    for label in torch.unique(split.labels).tolist():  # the ten; the fixture has no out-of-scope images
        name, in_class = model.class_names[label], split.labels == label
        accuracy = (predicted[in_class] == label).double().mean().item()
        assert accuracy >= 0.7, f"{name}: only {accuracy:.0%} of its clear examples recognised"
    assert (predicted == split.labels).double().mean().item() >= 0.9


def test_occluding_the_item_lowers_confidence_in_its_class(model: ClassifierModel) -> None:
    """Directional: blacking out the centre of the item should make the model less sure of its class."""
    split = read_split(FIXTURES_DIR, "test")
    share = occlusion_lowered_share(model, split.images, split.labels)
    bar = DEFAULT_BEHAVIOUR_BARS["occlusion-lowered"]
    assert share >= bar, f"occlusion lowered true-class confidence for only {share:.0%} of images"


def test_most_items_outside_the_ten_classes_are_declined() -> None:
    """Real out-of-scope photos from the shop export's fixture (belts, watches, skirts, ...), answered as
    the service answers them, with the shipped model's "unsure" threshold: most are not given a class."""
    predictor = Predictor.load(promoted_model_path())
    classes = predictor.model.class_names
    _, photos = labelled_photos(classes, splits=("train", "val", "test"), directory=SHOP_FIXTURES)
    outside = [item.photo.image for item in photos if item.target == OUT_OF_SCOPE_TARGET]
    answers = [
        predictor.predict_bytes(data, top_k=1, max_pixels=DEFAULT_MAX_PIXELS)
        for _, data in iter_image_bytes(SHOP_FIXTURES, outside)
    ]
    assert len(answers) == len(outside) >= 10
    declined = [answer for answer in answers if answer.outcome != "class"]
    assert len(declined) >= 0.75 * len(answers), [answer.top_k[0] for answer in answers]
