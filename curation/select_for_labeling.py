"""Pick the unlabelled images the model is least sure about, for a person to label next.

    select_for_labeling --pool DIR --n K [--model model.pt] [--by margin|entropy] [--out DIR]

Writes `queue.csv` (path,label,predicted,confidence,margin,entropy; fill in `label`, then
`./tasks/data.sh add NAME --from BASE --csv queue.csv` makes a data version of the labelled rows) and
`contact_sheet.png` (the queue as the model sees it: 28x28 after the serving preprocessing).
"""

import argparse
import csv
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from curation.labelled_images import IMAGE_SUFFIXES, read_views
from text_recognizer.labels import LabelError
from text_recognizer.models import ArtifactError, ClassifierModel
from text_recognizer.paths import SERVED_WEIGHTS_DIR
from text_recognizer.progress import progress
from text_recognizer.promoted import PromotedModelError, model_file
from training.image_grid import save_image_grid

logger = logging.getLogger("select_for_labeling")
STRATEGIES = ("margin", "entropy")


def margins(probabilities: torch.Tensor) -> torch.Tensor:
    """Top-1 minus top-2 probability: near 0 when the model hesitates between two classes."""
    top2 = probabilities.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def entropies(probabilities: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats: high when probability is spread over many classes."""
    return -(probabilities * probabilities.clamp_min(1e-12).log()).sum(dim=1)


@dataclass(frozen=True)
class Candidate:
    path: Path
    pixels: np.ndarray
    predicted: str
    confidence: float
    margin: float
    entropy: float


def score_pool(model: ClassifierModel, pool: Path) -> tuple[list[Candidate], list[str]]:
    """Every readable image under `pool` with its uncertainty; unreadable files are listed, not fatal."""
    paths = sorted(p for p in pool.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    readable, views, skipped = [], [], []
    for path in progress(paths, desc="reading the pool", unit="image"):
        try:
            upload = read_views(path, model.separated_view_side)[1]
        except LabelError as error:
            skipped.append(str(error))
            continue
        readable.append((path, upload[0]))
        views.append(upload)
    if not readable:
        return [], skipped
    predictions = model.predict_views(views)  # as the service answers
    margin, entropy = margins(predictions.probabilities), entropies(predictions.probabilities)
    candidates = [
        Candidate(
            path,
            pixels,
            predictions.categories[i],
            float(predictions.confidences[i]),
            float(margin[i]),
            float(entropy[i]),
        )
        for i, (path, pixels) in enumerate(readable)
    ]
    return candidates, skipped


def most_uncertain(candidates: list[Candidate], n: int, by: str) -> list[Candidate]:
    """The `n` most uncertain: smallest margin, or largest entropy; ties keep path order."""
    key = (lambda c: c.margin) if by == "margin" else (lambda c: -c.entropy)
    return sorted(candidates, key=key)[:n]


def write_queue(queue: list[Candidate], out: Path, by: str) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    table, sheet = out / "queue.csv", out / "contact_sheet.png"
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "predicted", "confidence", "margin", "entropy"])
        for item in queue:
            scores = [f"{value:.4f}" for value in (item.confidence, item.margin, item.entropy)]
            writer.writerow(
                [os.path.relpath(item.path.resolve(), out.resolve()), "", item.predicted, *scores]
            )
    captions = [
        f"#{rank} {item.predicted}\n{by} {getattr(item, by):.3f}" for rank, item in enumerate(queue, 1)
    ]
    save_image_grid(
        [item.pixels for item in queue], captions, sheet, f"labelling queue, most uncertain by {by}"
    )
    return table, sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--pool", type=Path, required=True, help="folder of unlabelled images (searched deeply)"
    )
    parser.add_argument("--n", type=int, required=True, help="how many images to queue")
    parser.add_argument("--model", type=Path, default=SERVED_WEIGHTS_DIR)
    parser.add_argument("--by", choices=STRATEGIES, default="margin")
    parser.add_argument("--out", type=Path, default=Path("reports") / "labeling")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.n < 1:
        parser.error("--n must be at least 1")
    if not args.pool.is_dir():
        print(f"error: --pool {args.pool} is not a folder", file=sys.stderr)
        return 2
    try:
        model = ClassifierModel.load(model_file(args.model))
    except (ArtifactError, PromotedModelError, OSError) as error:
        print(f"error: cannot load --model {args.model}: {error}", file=sys.stderr)
        return 2
    candidates, skipped = score_pool(model, args.pool)
    for problem in skipped:
        logger.warning("skipped %s", problem)
    if not candidates:
        print(f"error: no readable images under {args.pool}", file=sys.stderr)
        return 2
    queue = most_uncertain(candidates, args.n, args.by)
    table, sheet = write_queue(queue, args.out, args.by)
    logger.info("%d of %d images queued by %s: %s, %s", len(queue), len(candidates), args.by, table, sheet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
