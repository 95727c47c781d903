"""Regenerate `tests/fixtures/shop_photos/`: a small real subset of the shop photo export, in its format.

    python -m tests.support.create_shop_photo_fixtures [--mirror DIR_OR_URL]

For every source and mapped target, a seeded choice of photos from each recorded split (more from the
small catalogue files, fewer of the larger phone photos), plus one excluded photo per source. The
archives keep the export's member names and `photos.csv` its rows, so the fixture reads like the export;
archives are written with fixed timestamps, so regenerating gives identical bytes.
"""

import argparse
import csv
import gzip
import io
import json
import tarfile
from pathlib import Path

import numpy as np

from text_recognizer.datasets.download import download_dir
from text_recognizer.datasets.manifest import Manifest
from text_recognizer.datasets.shop_photos import (
    EXCLUDED,
    MANIFEST_NAME,
    SOURCES,
    LabelMapping,
    iter_image_bytes,
    read_photos,
    read_splits,
)
from text_recognizer.datasets.versions import FASHION_MNIST

FIXTURES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "shop_photos"
PER_SPLIT = {"catalogue": {"train": 3, "val": 2, "test": 2}, "shoes": {"train": 3, "val": 2, "test": 2},
             "phone": {"train": 2, "val": 1, "test": 1}}  # fmt: skip
SEED = 0


def choose(directory: Path) -> list[str]:
    """Image names: per (source, target, split) the first few of a seeded shuffle; one excluded per source."""
    mapping = LabelMapping.load(Manifest.named(FASHION_MNIST).classes)
    splits = read_splits()
    groups: dict[tuple[str, str, str], list[str]] = {}
    for photo in read_photos(directory):
        groups.setdefault((photo.source, mapping.target(photo), splits[photo.image]), []).append(photo.image)
    rng = np.random.default_rng(SEED)
    chosen = []
    for (source, target, split), names in sorted(groups.items()):
        excluded_wanted = 1 if split == "train" else 0
        wanted = excluded_wanted if target == EXCLUDED else PER_SPLIT[source][split]
        chosen += [names[i] for i in sorted(rng.permutation(len(names))[:wanted].tolist())]
    return chosen


def write_archive(path: Path, members: list[tuple[str, bytes]]) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            archive.addfile(info, io.BytesIO(data))
    path.write_bytes(gzip.compress(buffer.getvalue(), mtime=0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mirror", help="the export (directory or URL); else SHOP_PHOTOS_MIRROR")
    args = parser.parse_args(argv)
    directory = download_dir(Manifest.named(MANIFEST_NAME), mirror=args.mirror)
    chosen = choose(directory)
    images = dict(iter_image_bytes(directory, chosen))
    FIXTURES_DIR.mkdir(parents=True, exist_ok=True)
    for source in SOURCES:
        members = sorted((name, data) for name, data in images.items() if name.startswith(f"{source}/"))
        write_archive(FIXTURES_DIR / f"{source}.tar.gz", members)
    with (directory / "photos.csv").open(newline="") as handle:
        reader = csv.DictReader(handle)
        rows = [row for row in reader if row["image"] in images]
        fieldnames = reader.fieldnames
    assert fieldnames is not None
    with (FIXTURES_DIR / "photos.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fieldnames, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    summary = {
        "seed": SEED,
        "photos": len(rows),
        "per_source": {s: sum(r["source"] == s for r in rows) for s in SOURCES},
    }
    (FIXTURES_DIR / "fixtures.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"{len(rows)} real shop photos written to {FIXTURES_DIR}: {summary['per_source']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
