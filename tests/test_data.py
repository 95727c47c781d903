"""idx parsing on real fixture bytes, stratified splits, and what the loader exposes."""

import gzip
import hashlib
import json
from pathlib import Path

import pytest
import torch

from text_recognizer.datasets.fashion_mnist import load_fashion_mnist, read_split
from text_recognizer.datasets.idx import IdxFormatError, read_idx, write_idx
from text_recognizer.datasets.splits import stratified_sample
from text_recognizer.preprocessing import Normalization

from .conftest import FIXTURES_DIR

FIXTURE_RECORD = json.loads((FIXTURES_DIR / "fixtures.json").read_text())


def sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()


@pytest.mark.parametrize(("split_name", "count"), [("train", 300), ("test", 100)])
def test_parses_fixture_idx_files(split_name: str, count: int) -> None:
    split = read_split(FIXTURES_DIR, split_name)
    assert split.images.shape == (count, 28, 28) and split.images.dtype == torch.uint8
    assert split.labels.bincount().tolist() == [count // 10] * 10
    assert sha256(split.images) == FIXTURE_RECORD[split_name]["images_sha256"]
    assert sha256(split.labels.to(torch.uint8)) == FIXTURE_RECORD[split_name]["labels_sha256"]


def test_fixtures_are_real_images_from_the_official_files(full_data_dir: Path) -> None:
    for split_name, record in FIXTURE_RECORD.items():
        full = read_split(full_data_dir, split_name)
        fixture = read_split(FIXTURES_DIR, split_name)
        indices = torch.tensor(record["source_indices"])
        assert torch.equal(full.images[indices], fixture.images)
        assert torch.equal(full.labels[indices], fixture.labels)


def test_first_official_training_labels() -> None:
    # The first ten labels of train-labels-idx1-ubyte, as published.
    assert read_idx(FIXTURES_DIR / "train-labels-idx1-ubyte.gz")[:10].tolist() == [
        9,
        0,
        0,
        3,
        0,
        2,
        7,
        2,
        5,
        5,
    ]


@pytest.mark.parametrize("suffix", [".gz", ""])
def test_write_then_read_round_trip(tmp_path: Path, suffix: str) -> None:
    images = read_idx(FIXTURES_DIR / "t10k-images-idx3-ubyte.gz")
    path = tmp_path / f"copy-idx3-ubyte{suffix}"
    write_idx(path, images)
    assert torch.equal(read_idx(path), images)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "bad magic"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00", "not unsigned byte"),
        (b"\x00\x00\x08\x03\x00\x00", "header truncated"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "header \\(5,\\) implies 13"),
    ],
)
def test_malformed_idx_is_a_clear_error(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "bad-idx.gz"
    path.write_bytes(gzip.compress(data))
    with pytest.raises(IdxFormatError, match=message):
        read_idx(path)


def test_stratified_sample_keeps_class_balance_and_is_seeded() -> None:
    labels = read_split(FIXTURES_DIR, "train").labels
    chosen, rest = stratified_sample(labels, 50, seed=3)
    assert labels[chosen].bincount().tolist() == [5] * 10
    assert sorted(torch.cat([chosen, rest]).tolist()) == list(range(labels.numel()))
    assert torch.equal(chosen, stratified_sample(labels, 50, seed=3)[0])
    assert not torch.equal(chosen, stratified_sample(labels, 50, seed=4)[0])


def test_stratified_sample_with_uneven_classes_sums_to_count() -> None:
    labels = torch.tensor([0] * 7 + [1] * 2 + [2] * 1)
    chosen, _ = stratified_sample(labels, 5, seed=0)
    assert chosen.numel() == 5 and labels[chosen].bincount(minlength=3).tolist() == [4, 1, 0]


def test_stratified_sample_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match="cannot take 10 of 10"):
        stratified_sample(torch.zeros(10, dtype=torch.long), 10, seed=0)


@pytest.mark.slow
def test_loader_holds_out_validation_and_normalizes_on_train_only(full_data_dir: Path) -> None:
    data = load_fashion_mnist(val_size=5000, split_seed=0, raw_dir=full_data_dir)
    assert (len(data.train), len(data.val), len(data.test)) == (55000, 5000, 10000)
    assert data.val.labels.bincount().tolist() == [500] * 10
    assert data.normalization == Normalization.fit(data.train.images)
    assert data.normalization != Normalization.fit(torch.cat([data.train.images, data.test.images]))
    # No validation image is also a training image (compared by content, not index).
    train_hashes = {hash(image.numpy().tobytes()) for image in data.train.images}
    duplicates = sum(hash(image.numpy().tobytes()) in train_hashes for image in data.val.images)
    assert duplicates < 10  # Fashion-MNIST itself repeats a handful of images
    assert data.class_names[0] == "T-shirt/top" and len(data.class_names) == 10
    subset = load_fashion_mnist(val_size=500, train_size=2000, raw_dir=full_data_dir)
    assert len(subset.train) == 2000 and subset.train.labels.bincount().tolist() == [200] * 10
