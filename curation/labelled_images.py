"""Labelled images from outside the dataset: `<class>/<image>` folders, a CSV of paths and labels, feedback,
and the shop photo export's training split.

Every image goes through the same photo pipeline as serving (`image_bytes_to_input`), so a shop's photo
becomes the 28x28 Fashion-MNIST-style image the model will see from the API.
"""

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from api.feedback_store import FeedbackStore
from text_recognizer.datasets.download import download_dir
from text_recognizer.datasets.manifest import Manifest
from text_recognizer.datasets.photo_splits import evaluation_duplicates, evaluation_thumbnails, thumbnail
from text_recognizer.datasets.shop_photos import (
    MANIFEST_NAME,
    MAPPING_PATH,
    SPLITS_PATH,
    converted_images,
    labelled_photos,
)
from text_recognizer.datasets.versions import content_hash, sha256_file
from text_recognizer.labels import LabelError, class_index, is_index
from text_recognizer.paths import PROJECT_ROOT
from text_recognizer.preprocessing import ImageError, image_bytes_to_input, image_bytes_to_views

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}


@dataclass(frozen=True)
class LabelledImage:
    pixels: np.ndarray  # uint8 (28, 28)
    label: int
    source: str  # where it came from, recorded in the data version
    replaces: int | None = None  # index into the base training split to overwrite, else appended
    thumbnail: np.ndarray | None = None  # of the photo as sent: finds evaluation photos among new labels

    def record(self) -> dict[str, object]:
        """What the data version records about this image."""
        entry: dict[str, object] = {"source": self.source, "label": self.label}
        if self.replaces is not None:
            entry["replaces"] = self.replaces
        return entry


def read_image(path: Path) -> tuple[bytes, np.ndarray]:
    """An image file's bytes and its 28x28 input (the serving preprocessing); unusable files as LabelError."""
    data, views = read_views(path)
    return data, views[0]


def read_views(path: Path, separated_view_side: int = 0) -> tuple[bytes, np.ndarray]:
    """An image file's bytes and its views as a model with this `separated_view_side` classifies them
    (`image_bytes_to_views`: the 28x28 input first); unusable files as LabelError."""
    try:
        data = path.read_bytes()
        return data, image_bytes_to_views(data, separated_view_side=separated_view_side)
    except ImageError as error:
        raise LabelError(f"{path}: {error}") from None
    except OSError as error:
        raise LabelError(f"{path}: cannot read ({error.strerror})") from None


def read_labelled(path: Path, label: int, source: str, replaces: int | None = None) -> LabelledImage:
    """A labelled image file through the serving preprocessing, with its photo's thumbnail."""
    data, pixels = read_image(path)
    return LabelledImage(pixels, label, source, replaces, thumbnail(data))


def refuse_evaluation_photos(
    images: list[LabelledImage], mirror: str | None = None, directory: Path | None = None
) -> None:
    """Refuse new labels for photos of the shop photos' validation or test split (or copies of them,
    by the rule that keeps near-duplicates in one split): trained on, they would inflate every photo
    result measured on those splits. The export comes from `directory` or is fetched and verified."""
    checked = [(image.source, image.thumbnail) for image in images if image.thumbnail is not None]
    if not checked:
        return
    directory = directory or download_dir(Manifest.named(MANIFEST_NAME), mirror=mirror)
    found = evaluation_duplicates([thumb for _, thumb in checked], evaluation_thumbnails(directory))
    if found:
        listed = ", ".join(f"{checked[i][0]} (= {photo})" for i, photo in sorted(found.items())[:10])
        raise LabelError(
            f"{len(found)} labelled image(s) show a photo of the shop photos' validation or test split, "
            f"which training must never see: {listed}; leave them out"
        )


SHOP_PHOTOS_PREFIX = "shop_photos:"
# The committed files that select and label a version's shop photos, by the key that records their sha256.
SELECTION_FILES = {"mapping_sha256": MAPPING_PATH, "splits_sha256": SPLITS_PATH}
PREPROCESSING_FILES = ("text_recognizer/preprocessing.py",)


def preprocessing_sha256(root: Path = PROJECT_ROOT) -> str:
    """One hash over the code that turns photos into 28x28 images: a version records what made it."""
    return content_hash({name: sha256_file(root / name) for name in PREPROCESSING_FILES})


def from_shop_photos(
    class_names: tuple[str, ...], mirror: str | None = None, directory: Path | None = None
) -> list[LabelledImage]:
    """The export's training-split photos with their mapped classes (excluded ones left out), in
    `photos.csv` order, through the serving preprocessing. Validation and test photos stay out: they are
    the photo evaluation sets."""
    directory, photos = labelled_photos(class_names, splits=("train",), mirror=mirror, directory=directory)
    labels = {item.photo.image: class_index(item.target, class_names) for item in photos}
    pixels = converted_images(directory, labels, image_bytes_to_input)
    return [LabelledImage(pixels[name], label, SHOP_PHOTOS_PREFIX + name) for name, label in labels.items()]


def summarize_shop_photos(images: list[LabelledImage], class_names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The lineage of a version's shop photos in one entry: the hashed files that select and label them
    (the export's catalogue, the mapping, the splits) and counts, instead of 38,000 per-image entries."""
    checksums = Manifest.named(MANIFEST_NAME).checksums()
    per_class = Counter(class_names[image.label] for image in images)
    per_source = Counter(image.source.removeprefix(SHOP_PHOTOS_PREFIX).split("/")[0] for image in images)
    return [
        {
            "source": "shop_photos",
            "split": "train",
            "images": len(images),
            "per_class": dict(sorted(per_class.items())),
            "per_source": dict(sorted(per_source.items())),
            "photos_csv_sha256": checksums["photos.csv"],
            "mapping": str(MAPPING_PATH.relative_to(PROJECT_ROOT)),
            "mapping_sha256": sha256_file(MAPPING_PATH),
            "splits": str(SPLITS_PATH.relative_to(PROJECT_ROOT)),
            "splits_sha256": sha256_file(SPLITS_PATH),
            "preprocessing": "text_recognizer.preprocessing.image_bytes_to_input",
            "preprocessing_sha256": preprocessing_sha256(),
        }
    ]


def from_folder(directory: Path, class_names: tuple[str, ...]) -> list[LabelledImage]:
    """`directory/<class>/<image>`; the class folder is an index, a class name or its slug."""
    if not directory.is_dir():
        raise LabelError(f"{directory} is not a directory of <class>/<image> files")
    images = []
    for folder in sorted(p for p in directory.iterdir() if p.is_dir()):
        label = class_index(folder.name, class_names)
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                images.append(read_labelled(path, label, str(path.relative_to(directory))))
    if not images:
        raise LabelError(f"{directory} holds no images in <class>/<image> folders")
    return images


def from_csv(path: Path, class_names: tuple[str, ...]) -> list[LabelledImage]:
    """Columns `path,label` and optionally `replaces` (a training index); paths relative to the CSV.

    Rows with an empty label (a labelling queue not finished yet) are skipped.
    """
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as error:
        raise LabelError(f"{path}: cannot read ({error.strerror})") from None
    if not rows or not {"path", "label"} <= set(rows[0]):
        raise LabelError(f"{path} needs a header with the columns path,label (and optionally replaces)")
    images = []
    for line, row in enumerate(rows, start=2):
        if not (row["label"] or "").strip():
            continue
        replaces = (row.get("replaces") or "").strip()
        if replaces and not is_index(replaces):
            raise LabelError(f"{path}:{line}: replaces must be a training-image index, got {replaces!r}")
        try:
            label = class_index(row["label"], class_names)
        except LabelError as error:
            raise LabelError(f"{path}:{line}: {error}") from None
        image_path = path.parent / row["path"]
        images.append(read_labelled(image_path, label, row["path"], int(replaces) if replaces else None))
    return images


def from_feedback(store: FeedbackStore) -> list[LabelledImage]:
    """Feedback a reviewer accepted, oldest first, with the reviewed label; what is held back is
    logged by id and reason."""
    rows = store.training_rows()
    for reason, ids in (("not reviewed", rows.unreviewed), ("conflicting labels", rows.conflicted),
                        ("rejected", rows.rejected)):  # fmt: skip
        if ids:
            logger.warning("feedback held back (%s): ids %s; see ./tasks/review_feedback.sh", reason, ids)
    images = [read_labelled(r.image_path, r.label, f"feedback:{r.id}") for r in rows.records]
    if not images:
        raise LabelError(f"no accepted feedback in {store.engine.url}; see ./tasks/review_feedback.sh")
    return images
