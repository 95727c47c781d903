"""Seeded, stratified train/validation/test splits of the shop photos, with no near-duplicate across them.

    python -m text_recognizer.datasets.photo_splits [--mirror DIR_OR_URL] [--seed 0]

Photos are grouped first: identical bytes, or the same picture re-encoded, resized or recoloured, join
one group (transitively). A near-duplicate is a perceptual hash (64-bit DCT hash of the grayscale image)
within `CANDIDATE_BITS` of another's, confirmed by the 32x32 grayscale thumbnails: differing by at most
`NEAR_DUPLICATE_MEAN_DIFFERENCE` grey levels on average (a re-encoding or resize), or, within
`RECOLOURED_BITS`, with normalised thumbnails that correlate at least `RECOLOURED_CORRELATION` plus
`RECOLOURED_STEP` per differing bit (one shot of a product in another colour: a black and a brown boot
differ by 4.6 grey levels, have the same hash and correlate 0.979). The hash alone would chain
thousands of catalogue shots of different products into one group: they share a pose on white. Whole
groups are then dealt to the splits, stratified by source and source label (not by the mapped class, so
that revising the label mapping never moves a photo between splits), until each split holds its share.
The result is written to `data/splits/shop_photos.csv` (image, split, and the group's first photo when
the photo is not alone in its group) and committed: the splits are a record, not recomputed on the fly.
"""

import argparse
import csv
import io
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from text_recognizer.atomic import write_text_atomically
from text_recognizer.datasets.download import DownloadError, download_dir
from text_recognizer.datasets.manifest import Manifest
from text_recognizer.datasets.shop_photos import (
    MANIFEST_NAME,
    SPLITS_PATH,
    Photo,
    iter_image_bytes,
    read_photos,
    read_splits,
)

HASH_SIDE = 32  # the image is reduced to 32x32 before the DCT; the lowest 8x8 frequencies make the hash
# Hashes this close (of 64 bits) are compared by their thumbnails: 1.96 million pairs of the export.
# Resized copies of the tiny catalogue shots are not reliably caught (a 3/4-size copy moves the hash by up
# to 8 bits and differs by 2-7 grey levels, measured); the export has one size per source.
CANDIDATE_BITS = 8
# Measured on the export: at <= 2.0, pairs are the same shot (colour variants of one product included),
# 2,844 photos join groups, the largest of 86 (shades of one lipstick); at 3.0 different products join.
NEAR_DUPLICATE_MEAN_DIFFERENCE = 2.0
# Colour variants of one shot: 0.97 for the same hash, 0.99 at 4 bits. Measured on the export: 4,425
# photos in groups in all, the largest 156 (ties); a flat 0.975 up to 2 bits chains 342 formal shoes.
RECOLOURED_BITS = 4
RECOLOURED_CORRELATION = 0.97
RECOLOURED_STEP = 0.005
FRACTIONS = {"test": 0.15, "val": 0.15}  # the rest is train


def _dct_matrix(size: int) -> np.ndarray:
    k = np.arange(size)[:, None]
    n = np.arange(size)[None, :]
    matrix: np.ndarray = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * np.sqrt(2 / size)
    matrix[0] /= np.sqrt(2)
    return matrix


DCT = _dct_matrix(HASH_SIDE)


def thumbnail(data: bytes) -> np.ndarray:
    """The 32x32 grayscale thumbnail that the hash and the near-duplicate check compare."""
    with Image.open(io.BytesIO(data)) as image:
        gray = image.convert("L").resize((HASH_SIDE, HASH_SIDE), Image.Resampling.BOX)
    return np.asarray(gray, dtype=np.uint8)


def perceptual_hash(thumb: np.ndarray) -> int:
    """pHash: signs of a thumbnail's 8x8 lowest DCT frequencies against their median (DC excluded)."""
    pixels = thumb.astype(np.float64)
    low = (DCT @ pixels @ DCT.T)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return int(np.packbits(bits).view(">u8")[0])


def near_pairs(
    hashes: np.ndarray, max_bits: int = CANDIDATE_BITS, chunk: int = 2048, rows: int | None = None
) -> list[tuple[int, int]]:
    """Index pairs (i < j) whose hashes differ in at most `max_bits` bits: exact, by brute force. With
    `rows`, only pairs whose first index is below it (the rest are not compared with each other)."""
    pairs = []
    end = len(hashes) if rows is None else rows
    for start in range(0, end, chunk):
        block = hashes[start : min(start + chunk, end)]
        distances = np.bitwise_count(block[:, None] ^ hashes[None, :])
        in_block, cols = np.nonzero(distances <= max_bits)
        keep = cols > in_block + start
        pairs += list(zip((in_block[keep] + start).tolist(), cols[keep].tolist(), strict=True))
    return pairs


class UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        root_a, root_b = self.find(a), self.find(b)
        if root_a != root_b:
            self.parent[max(root_a, root_b)] = min(root_a, root_b)


def same_picture_pairs(thumbnails: np.ndarray, rows: int | None = None) -> np.ndarray:
    """Index pairs (i < j) of thumbnails that show the same picture: a near hash confirmed by the
    thumbnails (re-encoded or resized: a small mean difference; recoloured: a high correlation). With
    `rows`, only pairs whose first index is below it."""
    hashes = np.array([perceptual_hash(thumb) for thumb in thumbnails], dtype=np.uint64)
    pairs = np.array(near_pairs(hashes, rows=rows), dtype=np.int64).reshape(-1, 2)
    flat = thumbnails.reshape(len(thumbnails), -1).astype(np.float32)
    normalised = (flat - flat.mean(axis=1, keepdims=True)) / (flat.std(axis=1, keepdims=True) + 1e-6)
    confirmed = []
    for chunk in np.array_split(pairs, max(1, len(pairs) // 100_000)):
        first, second = chunk[:, 0], chunk[:, 1]
        difference = np.abs(flat[first] - flat[second]).mean(axis=1)
        correlation = (normalised[first] * normalised[second]).mean(axis=1)
        bits = np.bitwise_count(hashes[first] ^ hashes[second])
        recoloured = (bits <= RECOLOURED_BITS) & (
            correlation >= RECOLOURED_CORRELATION + RECOLOURED_STEP * bits
        )
        confirmed.append(chunk[(difference <= NEAR_DUPLICATE_MEAN_DIFFERENCE) | recoloured])
    return np.concatenate(confirmed)  # array_split gives at least one chunk


def duplicate_groups(photos: list[Photo], thumbnails: np.ndarray) -> list[int]:
    """For each photo, the index of the first photo of its group (identical bytes or a near-duplicate)."""
    groups = UnionFind(len(photos))
    first_with_bytes: dict[str, int] = {}
    for index, photo in enumerate(photos):
        groups.union(index, first_with_bytes.setdefault(photo.sha256, index))
    for a, b in same_picture_pairs(thumbnails).tolist():
        groups.union(a, b)
    return [groups.find(index) for index in range(len(photos))]


def evaluation_thumbnails(directory: Path, splits_path: Path = SPLITS_PATH) -> dict[str, np.ndarray]:
    """The thumbnails of every photo in the validation and test splits (excluded labels too: a mapping
    revised later must not find one of them already trained on)."""
    wanted = [image for image, split in read_splits(splits_path).items() if split != "train"]
    return {name: thumbnail(data) for name, data in iter_image_bytes(directory, wanted)}


def evaluation_duplicates(candidates: list[np.ndarray], evaluation: dict[str, np.ndarray]) -> dict[int, str]:
    """Which candidate thumbnails show the same picture as an evaluation photo: candidate index -> photo."""
    names = list(evaluation)
    if not candidates or not names:
        return {}
    # Candidates first, and only their rows compared: the evaluation photos are not paired among themselves.
    stacked = np.stack([*candidates, *evaluation.values()])
    found: dict[int, str] = {}
    for a, b in same_picture_pairs(stacked, rows=len(candidates)).tolist():
        if b >= len(candidates):
            found.setdefault(a, names[b - len(candidates)])
    return found


def assign_splits(photos: list[Photo], groups: list[int], seed: int) -> list[str]:
    """Deal whole groups to test, val, then train, per stratum (source, source label of the group's first
    photo), in a seeded order: a group goes to the first split that it does not take more than half its
    size past that split's share of the stratum (so a large group cannot swell the test split)."""
    members: dict[int, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    strata: dict[tuple[str, str], list[int]] = defaultdict(list)
    for group in sorted(members):
        strata[(photos[group].source, photos[group].source_label)].append(group)
    splits = ["train"] * len(photos)
    rng = np.random.default_rng(seed)
    for key in sorted(strata):
        stratum = strata[key]
        order = rng.permutation(len(stratum))
        total = sum(len(members[group]) for group in stratum)
        quotas = {name: round(fraction * total) for name, fraction in FRACTIONS.items()}
        filled = dict.fromkeys(FRACTIONS, 0)
        for position in order.tolist():
            group = stratum[position]
            size = len(members[group])
            name = next((n for n in FRACTIONS if filled[n] + size / 2 <= quotas[n]), "train")
            filled[name] = filled.get(name, 0) + size
            for index in members[group]:
                splits[index] = name
    return splits


def make_splits(directory: Path, seed: int = 0) -> list[dict[str, str]]:
    photos = read_photos(directory)
    position = {photo.image: index for index, photo in enumerate(photos)}
    thumbnails = np.zeros((len(photos), HASH_SIDE, HASH_SIDE), dtype=np.uint8)
    for name, data in iter_image_bytes(directory):
        thumbnails[position[name]] = thumbnail(data)
    groups = duplicate_groups(photos, thumbnails)
    splits = assign_splits(photos, groups, seed)
    return [
        {"image": photo.image, "split": split, "group": photos[group].image if group != index else ""}
        for index, (photo, split, group) in enumerate(zip(photos, splits, groups, strict=True))
    ]


def to_csv(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["image", "split", "group"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--mirror", help="directory, file:// or http(s) URL of the export (else SHOP_PHOTOS_MIRROR)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=SPLITS_PATH)
    args = parser.parse_args(argv)
    try:
        directory = download_dir(Manifest.named(MANIFEST_NAME), mirror=args.mirror)
    except DownloadError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    rows = make_splits(directory, args.seed)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(args.output, to_csv(rows))
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row["split"]] += 1
    grouped = sum(1 for row in rows if row["group"])
    print(
        f"{len(rows)} photos: {dict(counts)}; {grouped} joined a near-duplicate group; written {args.output}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
