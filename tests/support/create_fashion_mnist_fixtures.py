"""Regenerate the committed Fashion-MNIST test fixtures from the full, verified files.

Takes the first 30 training and first 10 test images of each class, in file order, and writes them as
gzipped idx files plus `fixtures.json` (source indices and a sha256 of the pixel and label bytes).

    python tests/support/create_fashion_mnist_fixtures.py [--mirror DIR_OR_URL]
"""

import argparse
import hashlib
import json
from pathlib import Path

import torch

from text_recognizer.datasets.download import download_dir
from text_recognizer.datasets.fashion_mnist import read_split
from text_recognizer.datasets.idx import write_idx
from text_recognizer.datasets.manifest import Manifest
from text_recognizer.datasets.versions import FASHION_MNIST, SPLIT_FILES

FIXTURES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "fashion_mnist"
PER_CLASS = {"train": 30, "test": 10}


def first_per_class(labels: torch.Tensor, count: int) -> torch.Tensor:
    chosen = [torch.nonzero(labels == label).flatten()[:count] for label in range(int(labels.max()) + 1)]
    return torch.cat(chosen).sort().values


def tensor_sha256(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mirror", help="directory, file:// or http(s) URL holding the official files")
    args = parser.parse_args()
    source_dir = download_dir(Manifest.named(FASHION_MNIST), mirror=args.mirror)
    FIXTURES_DIR.mkdir(parents=True, exist_ok=True)
    record = {}
    for split_name, count in PER_CLASS.items():
        split = read_split(source_dir, split_name)
        indices = first_per_class(split.labels, count)
        images, labels = split.images[indices], split.labels[indices].to(torch.uint8)
        images_file, labels_file = SPLIT_FILES[split_name]
        write_idx(FIXTURES_DIR / images_file, images)
        write_idx(FIXTURES_DIR / labels_file, labels)
        record[split_name] = {
            "source_indices": indices.tolist(),
            "images_sha256": tensor_sha256(images),
            "labels_sha256": tensor_sha256(labels),
        }
    (FIXTURES_DIR / "fixtures.json").write_text(json.dumps(record) + "\n")
    print(f"wrote {sum(len(r['source_indices']) for r in record.values())} images to {FIXTURES_DIR}")


if __name__ == "__main__":
    main()
