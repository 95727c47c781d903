"""The shop photo export as a data source: its downloader, the label mapping, the recorded splits, the
photo evaluation sets, and the versions made from it. Quick tests use the committed real subset
(`tests/fixtures/shop_photos/`); the full export (SHOP_PHOTOS_MIRROR) is for the slow ones."""

import csv
import gzip
import hashlib
import io
import shutil
import tarfile
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from curation.data_versions import pull_version, verify_versions
from curation.labelled_images import from_folder, preprocessing_sha256, refuse_evaluation_photos
from text_recognizer.datasets.download import DownloadError, download, download_dir
from text_recognizer.datasets.manifest import Manifest
from text_recognizer.datasets.photo_sets import NO_CLASS, load_photo_split, oversampled
from text_recognizer.datasets.photo_splits import make_splits, to_csv
from text_recognizer.datasets.shop_photos import (
    DOMAINS,
    EXCLUDED,
    MAPPING_PATH,
    OUT_OF_SCOPE,
    SPLITS,
    SPLITS_PATH,
    LabelMapping,
    Photo,
    iter_image_bytes,
    labelled_photos,
    read_photos,
    read_splits,
)
from text_recognizer.datasets.versions import DataVersion, DataVersionError, sha256_file
from text_recognizer.labels import LabelError
from training.config import CONFIGS_DIR, load_config

from .conftest import REPO_ROOT, spec_for
from .support.fixture_model import SHOP_FIXTURES

PHOTO_VERSION = load_config(CONFIGS_DIR / "photos.yaml").data.version  # what the shipped config trains on
TEN = Manifest.named("fashion_mnist").classes
ELEVEN = (*TEN, OUT_OF_SCOPE)


@pytest.fixture
def shop_manifest() -> Manifest:
    """The export's manifest, describing the committed subset instead (same names, no public URL)."""
    real = Manifest.named("shop_photos")
    return Manifest(
        name="shop_photos_fixture",
        description="committed subset of the shop photo export",
        mirror_env=real.mirror_env,
        mirrors=(),
        classes=(),
        files=tuple(replace(spec_for(SHOP_FIXTURES / spec.name), url=None) for spec in real.files),
    )


@pytest.fixture
def export(shop_manifest: Manifest, tmp_path: Path) -> Path:
    return download_dir(shop_manifest, tmp_path / "raw", str(SHOP_FIXTURES))


def test_the_export_has_no_public_url_and_names_the_variable_to_set(
    shop_manifest: Manifest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHOP_PHOTOS_MIRROR", raising=False)
    with pytest.raises(DownloadError, match="SHOP_PHOTOS_MIRROR or pass --mirror"):
        download(shop_manifest, tmp_path / "raw")
    assert list((tmp_path / "raw").iterdir()) == []
    monkeypatch.setenv("SHOP_PHOTOS_MIRROR", SHOP_FIXTURES.as_uri())  # a file:// URL works as well
    assert sorted(download(shop_manifest, tmp_path / "raw")) == sorted(f.name for f in shop_manifest.files)


def test_every_source_label_of_the_export_has_one_rule_and_titles_settle_doubtful_ones(export: Path) -> None:
    mapping = LabelMapping.load(TEN)
    photos = read_photos(export)
    targets = {photo.image: mapping.target(photo) for photo in photos}
    assert {"exclude", "out-of-scope", "sandal", "ankle-boot", "t-shirt-top"} <= set(targets.values())
    heels = Photo("x.jpg", "catalogue", "Footwear/Shoes/Heels", "", "")
    assert mapping.target(replace(heels, title="Catwalk Women Gold Sandals")) == "sandal"
    assert mapping.target(replace(heels, title="Rocia Women Black Pumps")) == "out-of-scope"
    casual = Photo("x.jpg", "catalogue", "Footwear/Shoes/Casual Shoes", "", "")
    assert mapping.target(replace(casual, title="Woodland Men Brown Boots")) == "ankle-boot"
    assert mapping.target(replace(casual, title="Converse Unisex Black Canvas Shoes")) == "sneaker"
    with pytest.raises(LabelError, match="no rule for catalogue label 'Apparel/Topwear/Capes'"):
        mapping.target(Photo("x.jpg", "catalogue", "Apparel/Topwear/Capes", "", ""))


def test_every_rule_states_a_reason_and_the_mapping_refuses_unknown_targets(tmp_path: Path) -> None:
    with MAPPING_PATH.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    doubtful = [row for row in rows if row["target"] == EXCLUDED or row["title_pattern"]]
    assert doubtful and all(row["reason"].strip() for row in rows)
    broken = tmp_path / "mapping.csv"
    broken.write_text("source,source_label,title_pattern,target,reason\ncatalogue,A/B/C,,hoodie,why\n")
    with pytest.raises(LabelError, match=r"mapping.csv:2: unknown target 'hoodie'"):
        LabelMapping.load(TEN, broken)


def test_recorded_splits_keep_near_duplicate_groups_together_and_match_the_fractions() -> None:
    with SPLITS_PATH.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    split_of = {row["image"]: row["split"] for row in rows}
    groups: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row["group"]:
            groups[row["group"]] |= {row["split"], split_of[row["group"]]}
    assert len(groups) > 100 and all(len(splits) == 1 for splits in groups.values())
    for source in ("catalogue", "shoes", "phone"):
        counts = Counter(row["split"] for row in rows if row["image"].startswith(f"{source}/"))
        total = sum(counts.values())
        assert counts["test"] / total == pytest.approx(0.15, abs=0.01), source
        assert counts["val"] / total == pytest.approx(0.15, abs=0.01), source


def test_re_encoded_and_recoloured_copies_land_in_the_split_of_their_original(
    export: Path, tmp_path: Path
) -> None:
    """The real split code on the fixture export, plus planted near-duplicates: a re-encoding (a
    re-upload), and the same shot in a deeper colour (the product's colour variant)."""
    original = (
        "catalogue/" + next(p.image for p in read_photos(export) if p.source == "catalogue").split("/")[1]
    )
    data = dict(iter_image_bytes(export, [original]))[original]
    image = Image.open(io.BytesIO(data))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=70)
    copy = tmp_path / "copy"
    shutil.copytree(export, copy)
    add_photo(copy, "catalogue/99999999.jpg", buffer.getvalue(), "Apparel/Topwear/Tshirts")
    pixels = np.asarray(image.convert("RGB")).astype(np.float64)
    item = pixels.min(axis=2) < 230  # the product, not the white backdrop
    pixels[item] = np.clip(255 - (255 - pixels[item]) * 1.8, 0, 255)  # the same shot, a deeper colour
    recoloured = io.BytesIO()
    Image.fromarray(pixels.round().astype(np.uint8)).save(recoloured, "PNG")
    add_photo(copy, "catalogue/99999998.jpg", recoloured.getvalue(), "Apparel/Topwear/Tshirts")
    rows = make_splits(copy, seed=0)
    by_image = {row["image"]: row for row in rows}
    for planted in ("catalogue/99999999.jpg", "catalogue/99999998.jpg"):
        assert by_image[planted]["group"] == original, planted
        assert by_image[planted]["split"] == by_image[original]["split"], planted
    assert to_csv(make_splits(copy, seed=0)) == to_csv(rows), "seeded: the same splits every time"


def test_labels_for_evaluation_photos_or_their_copies_are_refused(export: Path, tmp_path: Path) -> None:
    """A labeller's folder holding a validation photo re-encoded, and a test photo as is: adding them to a
    version would train on the photo evaluation sets. Training photos pass."""
    split_of = read_splits()
    first = {
        split: next(p.image for p in read_photos(export) if split_of[p.image] == split) for split in SPLITS
    }
    data = dict(iter_image_bytes(export, first.values()))
    folder = tmp_path / "labelled" / "t-shirt-top"
    folder.mkdir(parents=True)
    (folder / "train.jpg").write_bytes(data[first["train"]])
    (folder / "test.jpg").write_bytes(data[first["test"]])
    Image.open(io.BytesIO(data[first["val"]])).save(folder / "val.png")
    images = from_folder(folder.parent, ELEVEN)
    with pytest.raises(LabelError) as refused:
        refuse_evaluation_photos(images, directory=export)
    message = str(refused.value)
    assert message.startswith("2 labelled image(s) show a photo of the shop photos' validation or test")
    assert f"t-shirt-top/test.jpg (= {first['test']})" in message
    assert f"t-shirt-top/val.png (= {first['val']})" in message and "train.jpg" not in message
    refuse_evaluation_photos(
        [image for image in images if image.source.endswith("train.jpg")], directory=export
    )


def add_photo(export: Path, name: str, data: bytes, source_label: str) -> None:
    """Append one photo to an export folder (archive and CSV), as a new export would."""
    archive_path = export / "catalogue.tar.gz"
    archive_path.chmod(0o644)
    raw = io.BytesIO(gzip.decompress(archive_path.read_bytes()))
    with tarfile.open(fileobj=raw, mode="a") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    archive_path.write_bytes(gzip.compress(raw.getvalue()))
    (export / "photos.csv").chmod(0o644)
    with (export / "photos.csv").open("a", newline="") as handle:
        row = [name, "catalogue", source_label, "Copy", len(data), hashlib.sha256(data).hexdigest(), ""]
        csv.writer(handle, lineterminator="\n").writerow(row)


def test_photo_sets_go_through_the_serving_preprocessing_with_their_domains(export: Path) -> None:
    for classes, out_of_scope_label in ((ELEVEN, ELEVEN.index(OUT_OF_SCOPE)), (TEN, NO_CLASS)):
        test = load_photo_split(classes, "test", directory=export)
        assert test.images.dtype == torch.uint8 and tuple(test.images.shape[1:]) == (28, 28)
        assert set(test.domains) == set(DOMAINS)
        outside = torch.tensor([d == "out-of-scope" for d in test.domains])
        assert (test.labels[outside] == out_of_scope_label).all() and (test.labels[~outside] >= 0).all()
    _, photos = labelled_photos(TEN, splits=("train", "val", "test"), directory=export)
    assert len(photos) == len(read_photos(export)) - 3, "one excluded photo per source is left out"
    assert all(read_splits()[item.photo.image] == item.split for item in photos)


def test_oversampling_repeats_the_training_photos_of_a_domain(export: Path) -> None:
    _, photos = labelled_photos(ELEVEN, splits=("train",), directory=export)
    indices = torch.tensor([0, 2, *range(5, 5 + len(photos))])  # release images (some held out), photos
    repeated = oversampled(indices, ELEVEN, {"phone": 3}, photos_start=5, directory=export)
    phone = {5 + i for i, item in enumerate(photos) if item.domain == "phone"}
    assert phone and Counter(repeated.tolist()) == {i: 3 if i in phone else 1 for i in indices.tolist()}
    assert repeated[: len(indices)].tolist() == indices.tolist()  # the original order, then the copies


@pytest.mark.slow
def test_the_committed_splits_are_what_the_split_code_makes_from_the_full_export() -> None:
    directory = download_dir(Manifest.named("shop_photos"))
    assert to_csv(make_splits(directory, seed=0)) == SPLITS_PATH.read_text()
    split_of = read_splits()
    # A black and a brown boot, one shot: grouped. Known miss: boot_(4417)/(4418), the same boot in pink
    # and blue, have hashes 8 bits apart (correlation 0.982) and sit in train and val.
    assert split_of["shoes/boot_boot_(4150).jpg"] == split_of["shoes/boot_boot_(4151).jpg"]
    mapping = LabelMapping.load(TEN)
    assert all(mapping.target(photo) for photo in read_photos(directory)), "every label has a rule"


@pytest.mark.slow
def test_a_version_with_shop_photos_is_rebuilt_from_its_recipe_where_no_remote_has_it(dvc_repo: Path) -> None:
    """A clean clone has no DVC remote with the photo version the shipped config trains on: pull rebuilds
    it from v1, the export, the mapping and the splits, and only accepts bytes that match the record."""
    versions = dvc_repo / "data" / "versions"
    shutil.copy(REPO_ROOT / "data" / "versions" / f"{PHOTO_VERSION}.dvc", versions / f"{PHOTO_VERSION}.dvc")
    assert pull_version(PHOTO_VERSION, root=dvc_repo) == versions / PHOTO_VERSION
    assert verify_versions([PHOTO_VERSION], root=dvc_repo)[0].startswith(f"ok     {PHOTO_VERSION}")
    record = DataVersion.read(PHOTO_VERSION, versions)
    assert record.class_names == ELEVEN and record.counts["train"] > 60_000


def test_a_version_whose_mapping_changed_since_is_not_rebuilt_but_named(dvc_repo: Path) -> None:
    versions = dvc_repo / "data" / "versions"
    record = yaml.safe_load((REPO_ROOT / "data" / "versions" / f"{PHOTO_VERSION}.dvc").read_text())
    record["meta"]["data_version"]["sources"][0]["mapping_sha256"] = "0" * 64  # made from another mapping
    (versions / f"{PHOTO_VERSION}.dvc").write_text(yaml.safe_dump(record))
    with pytest.raises(DataVersionError, match=r"shop_photos_mapping\.csv changed since it was made"):
        pull_version(PHOTO_VERSION, root=dvc_repo)
    assert not (versions / PHOTO_VERSION).exists() and not (versions / f".{PHOTO_VERSION}.part").exists()


def test_the_committed_photo_version_was_made_by_todays_preprocessing_mapping_and_splits() -> None:
    """Training converts nothing: the photo version holds the photos as the preprocessing of its day made
    them, while validation, test and serving convert with today's. They must be the same code, or the
    version is stale (v2 and v3 are: they predate the greyscale decode, and stay as the records of older
    runs)."""
    (source,) = DataVersion.read(PHOTO_VERSION).sources
    assert source["preprocessing_sha256"] == preprocessing_sha256(), "remake the version (data.sh add)"
    assert source["mapping_sha256"] == sha256_file(MAPPING_PATH)
    assert source["splits_sha256"] == sha256_file(SPLITS_PATH)
