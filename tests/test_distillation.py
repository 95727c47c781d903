"""Distillation targets: each label mixed with the teachers' softened, mirror-averaged predictions."""

from pathlib import Path

import pytest
import torch

from text_recognizer.datasets.fashion_mnist import DatasetSplits, read_split
from text_recognizer.labels import OUT_OF_SCOPE
from text_recognizer.models import ClassifierModel
from training.config import DistillationConfig
from training.distillation import distillation_targets

from .conftest import FIXTURES_DIR
from .test_model import CLASSES, untrained_model


def teacher_file(path: Path, seed: int, classes: tuple[str, ...], out_of_scope_offset: float) -> Path:
    """A small network's weights: what the targets are made of, not how good they are, is tested."""
    model = untrained_model(classes)
    torch.manual_seed(seed)
    model.network.apply(
        lambda module: module.reset_parameters() if hasattr(module, "reset_parameters") else None
    )
    model.out_of_scope_offset = out_of_scope_offset  # a promoted teacher's serving choice
    model.save(path)
    return path


def expected_probabilities(path: Path, images: torch.Tensor, temperature: float) -> torch.Tensor:
    teacher = ClassifierModel.load(path)
    inputs = teacher.network_input(images)
    with torch.no_grad():
        teacher.network.eval()
        logits = (teacher.network(inputs) + teacher.network(inputs.flip(-1))) / 2
    return torch.softmax(logits / temperature, dim=1)


@pytest.mark.parametrize("out_of_scope_offset", [0.0, 2.0])
def test_targets_mix_the_label_with_the_teachers_mean_without_touching_the_random_numbers(
    out_of_scope_offset: float, tmp_path: Path
) -> None:
    """A teacher's out-of-scope offset is left out: the network's own belief is what is distilled."""
    train = read_split(FIXTURES_DIR, "train")
    classes = (*CLASSES, OUT_OF_SCOPE) if out_of_scope_offset else CLASSES
    model = untrained_model(classes)
    data = DatasetSplits(train, train, train, model.class_names, model.normalization, {}, "v1", "")
    teachers = tuple(
        teacher_file(tmp_path / f"{seed}.pt", seed, classes, out_of_scope_offset) for seed in (1, 2)
    )
    settings = DistillationConfig(teachers=teachers, weight=0.3, temperature=2.0)
    torch.manual_seed(7)
    random_numbers = torch.get_rng_state()
    targets, provenance = distillation_targets(data, settings, torch.device("cpu"))
    assert torch.equal(torch.get_rng_state(), random_numbers), "training's random numbers are its own"
    mean = sum(expected_probabilities(path, train.images, 2.0) for path in teachers) / 2
    one_hot = torch.nn.functional.one_hot(train.labels, len(model.class_names)).float()
    assert torch.allclose(targets, 0.7 * one_hot + 0.3 * mean, atol=1e-5)
    assert torch.allclose(targets.sum(dim=1), torch.ones(len(train)), atol=1e-5)
    assert torch.equal(targets.argmax(dim=1), train.labels), "the label keeps the majority"
    assert [entry["path"] for entry in provenance] == [str(path) for path in teachers]


def test_a_teacher_share_over_half_is_refused() -> None:
    with pytest.raises(ValueError, match=r"less than or equal to 0\.5"):
        DistillationConfig(teachers=(Path("a.pt"),), weight=0.6)
