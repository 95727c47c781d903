"""Knowledge distillation: training targets that mix each label with trained teachers' predictions.

Averaging the predictions of two trained networks is more accurate on the photo validation split than
either network (2026-11-29: phone photos 82.3% and 81.1% alone, 83.9% together), but serving both would
double the size and the time. A network trained towards the ensemble's softened probabilities learns
part of what it knows at one network's cost. The targets are mixed, not two losses: the student's
cross-entropy at temperature 1 against (1 - weight) label + weight teachers (no T^2-scaled second term,
as in Hinton et al.); `trainer.label_smoothing` smooths the mix as it would a label. Every process of
a distributed run computes them for the whole training split.
"""

from pathlib import Path

import torch

from text_recognizer.datasets.fashion_mnist import DatasetSplits
from text_recognizer.models.classifier import ClassifierModel
from training.config import ConfigError, DistillationConfig
from training.model_files import named_model


def load_teacher(
    path: Path, class_names: tuple[str, ...], input_shape: tuple[int, ...]
) -> tuple[ClassifierModel, str]:
    """A teacher model, checked against the data's classes and input shape, and its sha256. Loaded
    without drawing from the training's random numbers (building a network initializes weights)."""
    with torch.random.fork_rng(devices=[]):
        teacher, sha256 = named_model(path, "distillation.teachers")
    if (teacher.class_names, teacher.input_shape) != (tuple(class_names), tuple(input_shape)):
        raise ConfigError(
            f"distillation.teachers: {path} classifies {teacher.input_shape} images into "
            f"{teacher.class_names}; the data has {tuple(input_shape)} images of {tuple(class_names)}"
        )
    return teacher, sha256


def teacher_probabilities(teacher: ClassifierModel, images: torch.Tensor, temperature: float) -> torch.Tensor:
    """The teacher's probabilities for unaugmented training images: its logits averaged with the mirror
    image's (training flips images, so both are pictures it learnt from) and divided by `temperature`,
    which replaces the teacher's own (a promoted model's calibrated one); without its out-of-scope offset,
    a serving choice the student's own promotion makes again."""
    teacher.test_time_flip = True
    teacher.temperature, teacher.out_of_scope_offset = temperature, 0.0
    return torch.softmax(teacher.logits(images), dim=1)


def distillation_targets(
    data: DatasetSplits, settings: DistillationConfig, device: torch.device
) -> tuple[torch.Tensor, list[dict[str, str]]]:
    """Per training image, a target distribution: (1 - weight) on its label plus weight times the
    teachers' mean probabilities; with weight at most 0.5 the label stays each target's largest class
    (tied only where the teachers give another class all of their probability).
    Also the teachers' paths and sha256, for the model's metadata."""
    images, labels, classes = data.train.images, data.train.labels, data.class_names
    mean = torch.zeros(len(labels), len(classes))
    provenance = []
    for path in settings.teachers:
        teacher, sha256 = load_teacher(path, classes, data.input_shape)
        probabilities = teacher_probabilities(teacher.to(device), images, settings.temperature)
        mean += probabilities / len(settings.teachers)
        provenance.append({"path": str(path), "sha256": sha256})
    one_hot = torch.nn.functional.one_hot(labels.cpu(), len(classes)).float()
    return (1 - settings.weight) * one_hot + settings.weight * mean, provenance
