"""A small model trained in seconds on the committed fixtures alone: the model the API's behaviour tests
serve, so that promoting another shipped model cannot change what they see. The shipped model keeps its
own gates (test_behaviour, test_evaluation, test_promote).

It is trained, calibrated and given an "unsure" threshold by the project's own code, on the fixtures'
training images (Fashion-MNIST's subset and the shop photos of the `train` split); the fixtures' test
images and other photos are its validation split, where the temperature, the out-of-scope offset and the
threshold are chosen.
"""

import hashlib
import json
from pathlib import Path

import torch

from text_recognizer.datasets.idx import read_idx
from text_recognizer.datasets.labelled_split import Split
from text_recognizer.datasets.manifest import Manifest
from text_recognizer.datasets.photo_sets import load_photo_split
from text_recognizer.evaluation import domain_report
from text_recognizer.labels import OUT_OF_SCOPE
from text_recognizer.models import ClassifierModel
from text_recognizer.paths import MODEL_CARD_NAME
from text_recognizer.preprocessing import Normalization
from training.calibration import calibrate, choose_out_of_scope_offset, unsure_threshold

TESTS_DIR = Path(__file__).resolve().parents[1]
FASHION_MNIST_FIXTURES = TESTS_DIR / "fixtures" / "fashion_mnist"
SHOP_FIXTURES = TESTS_DIR / "fixtures" / "shop_photos"
CLASSES = (*Manifest.named("fashion_mnist").classes, OUT_OF_SCOPE)
EPOCHS = 30
BATCH_SIZE = 32
PHOTO_REPEATS = 4


def fixture_split(fashion_mnist: str, photo_splits: tuple[str, ...], photo_repeats: int = 1) -> Split:
    """A Fashion-MNIST fixture file pair (`train` or `t10k`) and the fixture photos of `photo_splits`,
    each repeated `photo_repeats` times."""
    parts = [
        Split(
            read_idx(FASHION_MNIST_FIXTURES / f"{fashion_mnist}-images-idx3-ubyte.gz"),
            read_idx(FASHION_MNIST_FIXTURES / f"{fashion_mnist}-labels-idx1-ubyte.gz").long(),
        )
    ]
    parts += [load_photo_split(CLASSES, split, directory=SHOP_FIXTURES) for split in photo_splits]
    parts[1:] *= photo_repeats
    return Split(
        torch.cat([part.images for part in parts]),
        torch.cat([part.labels for part in parts]),
        sum((part.domain_names() for part in parts), ()),
    )


def domain_results(model: ClassifierModel, split: Split, unsure_below: float) -> dict[str, dict]:
    """Each domain of `split` as the service answers it, as the card of a promoted model reports them."""
    probabilities = torch.softmax(model.logits(split.images), dim=1)
    results = {}
    for domain in dict.fromkeys(split.domain_names()):
        rows = torch.tensor([name == domain for name in split.domain_names()])
        report = domain_report(probabilities[rows], split.labels[rows], CLASSES, unsure_below, OUT_OF_SCOPE)
        results[domain] = {k: v for k, v in report.items() if not k.startswith("confusion")}
    return results


def train_fixture_model(weights_dir: Path) -> Path:
    """Train, calibrate and save the model with its card into `weights_dir`; return its `model.pt`."""
    torch.manual_seed(0)
    # The photos are 86 of the 466 training images, out-of-scope ones 5: seen PHOTO_REPEATS times an epoch,
    # they are learnt well enough to be answered out of scope above the threshold.
    train = fixture_split("train", ("train",), PHOTO_REPEATS)
    val = fixture_split("t10k", ("val", "test"))
    files = sorted(FASHION_MNIST_FIXTURES.glob("*.gz"))
    checksums = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in files}
    model = ClassifierModel(
        "cnn",
        {"channels": [16, 32], "convs_per_stage": 1, "hidden_size": 64},
        (1, 28, 28),
        CLASSES,
        Normalization.fit(train.images),
        metadata={"run_name": "fixture", "data": {"checksums": checksums}},
    )
    optimizer = torch.optim.AdamW(model.network.parameters(), lr=3e-3)
    for _ in range(EPOCHS):
        order = torch.randperm(len(train)).split(BATCH_SIZE)
        model.fit_epoch(((train.images[i], train.labels[i]) for i in order), optimizer)
    model.metadata["metrics"] = {f"val_{k}": v for k, v in model.evaluate(val.images, val.labels).items()}
    calibration = calibrate(model, val)
    offset = choose_out_of_scope_offset(model, val)
    threshold = unsure_threshold(model, val, target_accuracy=0.7)
    weights_dir.mkdir(parents=True, exist_ok=True)
    model.save(weights_dir / "model.pt")
    digest = hashlib.sha256((weights_dir / "model.pt").read_bytes()).hexdigest()
    card = {
        "name": "fixture",
        "version": digest[:12],
        "sha256": digest,
        "classes": list(CLASSES),
        "calibration": calibration,
        "out_of_scope_offset": offset,
        "confidence_threshold": threshold,
        "domains": domain_results(model, val, threshold["value"]),
    }
    (weights_dir / MODEL_CARD_NAME).write_text(json.dumps(card, indent=2))
    return weights_dir / "model.pt"
