"""Selection for labelling: uncertain images first, a queue CSV and contact sheet, labelled rows usable."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from curation.labelled_images import from_csv
from curation.select_for_labeling import entropies, main, margins
from text_recognizer.datasets.idx import read_idx
from text_recognizer.models import ClassifierModel
from text_recognizer.promoted import promoted_model_path

from .conftest import FIXTURES_DIR

IMAGES = read_idx(FIXTURES_DIR / "t10k-images-idx3-ubyte.gz").numpy()
LABELS = read_idx(FIXTURES_DIR / "t10k-labels-idx1-ubyte.gz").tolist()
CLASSES = ClassifierModel.load(promoted_model_path()).class_names


@pytest.fixture
def pool(tmp_path: Path) -> Path:
    """A confidently classified trouser, the real test image the model hesitates most on, and junk."""
    model = ClassifierModel.load(promoted_model_path())
    probabilities = model.predict(IMAGES).probabilities
    hardest = int(margins(probabilities).argmin())
    trouser = LABELS.index(1)
    assert margins(probabilities)[hardest] < 0.5 < 0.95 < margins(probabilities)[trouser]
    folder = tmp_path / "pool"
    (folder / "shop").mkdir(parents=True)
    Image.fromarray(IMAGES[trouser]).save(folder / "a_confident.png")
    Image.fromarray(IMAGES[hardest]).save(folder / "shop" / "b_ambiguous.png")
    (folder / "c_notes.jpg").write_text("not an image")
    return folder


@pytest.mark.parametrize("strategy", ["margin", "entropy"])
def test_ambiguous_images_are_queued_before_confident_ones(pool: Path, tmp_path: Path, strategy: str) -> None:
    out = tmp_path / "queue"
    assert main(["--pool", str(pool), "--n", "2", "--by", strategy, "--out", str(out)]) == 0
    with (out / "queue.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [Path(row["path"]).name for row in rows] == ["b_ambiguous.png", "a_confident.png"]
    assert rows[1]["predicted"] == "Trouser" and all(row["label"] == "" for row in rows)
    assert float(rows[0]["margin"]) < float(rows[1]["margin"])
    assert float(rows[0]["entropy"]) > float(rows[1]["entropy"])
    assert (out / "contact_sheet.png").read_bytes().startswith(b"\x89PNG")


def test_a_labelled_queue_becomes_labelled_images(pool: Path, tmp_path: Path) -> None:
    out = tmp_path / "queue"
    assert main(["--pool", str(pool), "--n", "1", "--out", str(out)]) == 0
    table = out / "queue.csv"
    rows = list(csv.DictReader(table.open()))
    rows[0]["label"] = "shirt"
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (image,) = from_csv(table, CLASSES)
    assert image.label == 6
    assert np.array_equal(image.pixels, np.asarray(Image.open(pool / "shop" / "b_ambiguous.png")))


def test_uncertainty_scores() -> None:
    sure, torn = torch.tensor([[1.0] + [0.0] * 9]), torch.tensor([[0.5, 0.5] + [0.0] * 8])
    assert margins(sure).item() == 1.0 and margins(torn).item() == 0.0
    assert entropies(sure).item() == pytest.approx(0.0, abs=1e-9)
    assert entropies(torch.full((1, 10), 0.1)).item() == pytest.approx(np.log(10))


def test_bad_arguments_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--pool", str(tmp_path / "missing"), "--n", "3"]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["--pool", str(tmp_path / "empty"), "--n", "3", "--out", str(tmp_path / "q")]) == 2
    assert "no readable images" in capsys.readouterr().err
