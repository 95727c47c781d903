"""The shop's photo export: its catalogue of photos, the committed label mapping and the recorded splits.

The export (`manifests/shop_photos.toml`) is three archives of JPEGs plus `photos.csv`, one row per
photo with its source's own label. What a source label means for this product is a decision recorded in
`data/labels/shop_photos_mapping.csv`: one of the ten classes, out of scope (taught as the extra class
"Out of scope") or excluded (neither trained on nor evaluated). Which split each photo belongs to is
recorded in `data/splits/shop_photos.csv` (see `photo_splits`); the photo test split is read once, after
training, like Fashion-MNIST's.
"""

import csv
import re
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from text_recognizer.datasets.download import download_dir
from text_recognizer.datasets.manifest import Manifest
from text_recognizer.labels import OUT_OF_SCOPE, LabelError, slug
from text_recognizer.paths import PROJECT_ROOT
from text_recognizer.progress import progress

MANIFEST_NAME = "shop_photos"
MAPPING_PATH = PROJECT_ROOT / "data" / "labels" / "shop_photos_mapping.csv"
SPLITS_PATH = PROJECT_ROOT / "data" / "splits" / "shop_photos.csv"
SOURCES = ("catalogue", "shoes", "phone")
SPLITS = ("train", "val", "test")
OUT_OF_SCOPE_TARGET = slug(OUT_OF_SCOPE)
EXCLUDED = "exclude"
# Evaluation domains: where a photo comes from, or out of scope whatever its source.
DOMAINS = ("catalogue", "shoes", "phone", OUT_OF_SCOPE_TARGET)


@dataclass(frozen=True)
class Photo:
    """One row of `photos.csv`: `image` is its path inside its source's archive."""

    image: str
    source: str
    source_label: str
    title: str
    sha256: str


@dataclass(frozen=True)
class MappingRule:
    source: str
    source_label: str
    title_pattern: re.Pattern[str] | None
    target: str  # a class slug, OUT_OF_SCOPE_TARGET or EXCLUDED
    reason: str


class LabelMapping:
    """Source labels (and product titles, where they settle a case) to a target, from the committed CSV.

    For one source label, rules with a title pattern are tried first, in file order; the rule without a
    pattern is the fallback, and every source label needs exactly one.
    """

    def __init__(self, rules: list[MappingRule], path: Path) -> None:
        self.path = path
        self.patterns: dict[tuple[str, str], list[MappingRule]] = {}
        self.fallbacks: dict[tuple[str, str], MappingRule] = {}
        for rule in rules:
            key = (rule.source, rule.source_label)
            if rule.title_pattern is not None:
                self.patterns.setdefault(key, []).append(rule)
            elif key in self.fallbacks:
                raise LabelError(f"{path}: two fallback rows for {rule.source} {rule.source_label!r}")
            else:
                self.fallbacks[key] = rule

    @classmethod
    def load(cls, class_names: tuple[str, ...], path: Path = MAPPING_PATH) -> "LabelMapping":
        valid = {slug(name) for name in class_names} | {OUT_OF_SCOPE_TARGET, EXCLUDED}
        rules = []
        with path.open(newline="") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                if row["target"] not in valid:
                    raise LabelError(
                        f"{path}:{line}: unknown target {row['target']!r}; valid: {sorted(valid)}"
                    )
                try:
                    pattern = (
                        re.compile(row["title_pattern"], re.IGNORECASE) if row["title_pattern"] else None
                    )
                except re.error as error:
                    raise LabelError(f"{path}:{line}: bad title_pattern ({error})") from None
                rules.append(
                    MappingRule(row["source"], row["source_label"], pattern, row["target"], row["reason"])
                )
        return cls(rules, path)

    def rule(self, photo: Photo) -> MappingRule:
        key = (photo.source, photo.source_label)
        for rule in self.patterns.get(key, ()):
            if rule.title_pattern is not None and rule.title_pattern.search(photo.title):
                return rule
        if key not in self.fallbacks:
            raise LabelError(f"{self.path} has no rule for {photo.source} label {photo.source_label!r}")
        return self.fallbacks[key]

    def target(self, photo: Photo) -> str:
        return self.rule(photo).target


def read_photos(directory: Path) -> list[Photo]:
    """Every row of the export's `photos.csv`, in file order."""
    with (directory / "photos.csv").open(newline="") as handle:
        return [
            Photo(row["image"], row["source"], row["source_label"], row["title"], row["sha256"])
            for row in csv.DictReader(handle)
        ]


def iter_image_bytes(directory: Path, wanted: Iterable[str] | None = None) -> Iterator[tuple[str, bytes]]:
    """(image, bytes) for the wanted images (all when None), streamed from the archives in their order.

    The archives were verified when fetched; reading members in archive order keeps this one pass per
    archive (a gzip stream cannot seek).
    """
    wanted_set = None if wanted is None else set(wanted)
    for source in SOURCES:
        if wanted_set is not None and not any(name.startswith(f"{source}/") for name in wanted_set):
            continue
        with tarfile.open(directory / f"{source}.tar.gz", "r:gz") as archive:
            for member in archive:
                if member.isfile() and (wanted_set is None or member.name in wanted_set):
                    handle = archive.extractfile(member)
                    assert handle is not None
                    yield member.name, handle.read()


def converted_images(
    directory: Path, names: Iterable[str], convert: Callable[[bytes], np.ndarray]
) -> dict[str, np.ndarray]:
    """`convert` applied to each named image; a name missing from its archive, or an image that cannot
    be converted (the converter's ValueError, e.g. `ImageError`), is a LabelError naming the photo."""
    wanted = set(names)
    converted = {}
    photos = progress(iter_image_bytes(directory, wanted), desc="converting photos", total=len(wanted))
    for name, data in photos:
        try:
            converted[name] = convert(data)
        except ValueError as error:
            raise LabelError(f"shop photo {name}: {error}") from None
    missing = sorted(wanted - converted.keys())
    if missing:
        raise LabelError(
            f"{len(missing)} photos listed in photos.csv are not in the archives of {directory}: "
            + ", ".join(missing[:5])
        )
    return converted


def read_splits(path: Path = SPLITS_PATH) -> dict[str, str]:
    """Image to split (`train`, `val` or `test`), as recorded by `photo_splits`."""
    with path.open(newline="") as handle:
        return {row["image"]: row["split"] for row in csv.DictReader(handle)}


@dataclass(frozen=True)
class LabelledPhoto:
    photo: Photo
    target: str  # a class slug or OUT_OF_SCOPE_TARGET
    split: str

    @property
    def domain(self) -> str:
        return OUT_OF_SCOPE_TARGET if self.target == OUT_OF_SCOPE_TARGET else self.photo.source


def labelled_photos(
    class_names: tuple[str, ...],
    *,
    splits: Iterable[str] = SPLITS,
    mirror: str | None = None,
    directory: Path | None = None,
    mapping_path: Path = MAPPING_PATH,
    splits_path: Path = SPLITS_PATH,
) -> tuple[Path, list[LabelledPhoto]]:
    """The export's directory and its photos in `splits` with their targets (excluded ones not).

    The export is fetched and verified by the downloader unless `directory` holds one already verified.
    """
    directory = directory or download_dir(Manifest.named(MANIFEST_NAME), mirror=mirror)
    mapping = LabelMapping.load(class_names, mapping_path)
    assigned = read_splits(splits_path)
    wanted = set(splits)
    photos = []
    for photo in read_photos(directory):
        split = assigned.get(photo.image)
        if split is None:
            raise LabelError(f"{photo.image} has no split in {splits_path}; run ./tasks/split_photos.sh")
        target = mapping.target(photo)
        if split in wanted and target != EXCLUDED:
            photos.append(LabelledPhoto(photo, target, split))
    return directory, photos
