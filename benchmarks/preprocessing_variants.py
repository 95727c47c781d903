"""Which photo conversion helps the network: each variant of `Conversion`, measured on the photo
validation split (never the test split).

    python -m benchmarks.preprocessing_variants [--epochs 3] [--threads 1] [--seeds 1] [--variants ...]

For every variant the shop photos' training and validation splits are converted, a small CNN is trained
from the same seed on the training photos alone (Fashion-MNIST images pass through any variant
unchanged, so they would not tell the variants apart), and its validation accuracy is reported per
domain with the conversion time per photo; with `--seeds N`, the mean over N seeds and the spread of
the mean across seeds (one seed cannot tell a 1-point difference from noise). Prints a table and writes
benchmarks/results/preprocessing_variants.json.
"""

import argparse
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch

from benchmarks.common import print_table, write_result
from text_recognizer.datasets.labelled_split import Split
from text_recognizer.datasets.manifest import Manifest
from text_recognizer.datasets.photo_sets import photo_label
from text_recognizer.datasets.shop_photos import DOMAINS, iter_image_bytes, labelled_photos
from text_recognizer.datasets.versions import FASHION_MNIST
from text_recognizer.labels import OUT_OF_SCOPE
from text_recognizer.models import ClassifierModel
from text_recognizer.preprocessing import Conversion, Normalization, image_bytes_to_input
from training.config import AugmentationConfig
from training.trainer import shuffled_batches

VARIANTS = {
    "corner trim, full size": Conversion(work_side=100_000),
    "corner trim at 112 px (served)": Conversion(),
    "at 112 px, subsample": Conversion(subsample=True),
    "at 112 px, sharpen": Conversion(sharpen=True),
    "at 112 px, subsample + sharpen (the paper's)": Conversion(subsample=True, sharpen=True),
    "at 112 px, busy backgrounds separated at 48 px": Conversion(separation_side=48),
    "at 112 px, busy backgrounds separated at 64 px": Conversion(separation_side=64),
    "at 112 px, busy backgrounds separated at 112 px": Conversion(separation_side=112),
}
AUGMENTATION = AugmentationConfig(crop_padding=2, horizontal_flip=True)


def converted(photos_bytes: dict[str, bytes], conversion: Conversion) -> tuple[dict[str, np.ndarray], float]:
    started = time.perf_counter()
    pixels = {name: image_bytes_to_input(data, conversion=conversion) for name, data in photos_bytes.items()}
    return pixels, (time.perf_counter() - started) / len(photos_bytes) * 1000


def as_split(items: list[Any], pixels: dict[str, np.ndarray], class_names: tuple[str, ...]) -> Split:
    return Split(
        torch.from_numpy(np.stack([pixels[item.photo.image] for item in items])),
        torch.tensor([photo_label(item.target, class_names) for item in items]),
        tuple(item.domain for item in items),
    )


def train_and_score(
    train: Split, val: Split, class_names: tuple[str, ...], epochs: int, seed: int
) -> dict[str, float]:
    torch.manual_seed(seed)
    model = ClassifierModel(
        "cnn",
        {"channels": [32, 64], "convs_per_stage": 1, "hidden_size": 128, "dropout": 0.25},
        (1, 28, 28),
        class_names,
        Normalization.fit(train.images),
    )
    optimizer = torch.optim.AdamW(model.network.parameters(), lr=3e-3, weight_decay=1e-4)
    steps = len(train) // 128
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps * epochs)
    for epoch in range(1, epochs + 1):  # the trainer's own seeded, augmented batches
        model.fit_epoch(
            shuffled_batches(train.images, train.labels, 128, seed, epoch, AUGMENTATION), optimizer, scheduler
        )
    scores = {}
    for domain, part in val.by_domain().items():
        scores[domain] = model.evaluate(part.images, part.labels)["accuracy"]
    return scores


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", type=int, default=1, help="train each variant from this many seeds")
    parser.add_argument("--variants", nargs="*", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    class_names = (*Manifest.named(FASHION_MNIST).classes, OUT_OF_SCOPE)
    directory, photos = labelled_photos(class_names, splits=("train", "val"))
    photos_bytes = dict(iter_image_bytes(directory, (item.photo.image for item in photos)))
    train_items = [item for item in photos if item.split == "train"]
    val_items = [item for item in photos if item.split == "val"]
    rows = []
    for name in args.variants:
        conversion = VARIANTS[name]
        pixels, milliseconds = converted(photos_bytes, conversion)
        train, val = as_split(train_items, pixels, class_names), as_split(val_items, pixels, class_names)
        runs = [train_and_score(train, val, class_names, args.epochs, seed) for seed in range(args.seeds)]
        row: dict[str, Any] = {"variant": name, "ms_per_photo": round(milliseconds, 2)}
        row.update({domain: round(float(np.mean([run[domain] for run in runs])), 4) for domain in DOMAINS})
        means = [float(np.mean([run[domain] for domain in DOMAINS])) for run in runs]
        row["mean"] = round(float(np.mean(means)), 4)
        row["mean_spread"] = round(max(means) - min(means), 4)
        rows.append(row)
        print(row, flush=True)
    print_table(
        f"Photo validation accuracy by conversion ({args.epochs} epochs, small CNN, photos only, "
        f"mean of {args.seeds} seed(s))",
        rows,
    )
    write_result(
        "preprocessing_variants",
        rows,
        epochs=args.epochs,
        seeds=args.seeds,
        variants={name: asdict(VARIANTS[name]) for name in args.variants},
        train_photos=len(train_items),
        val_photos=len(val_items),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
