"""Evaluate a model artifact or a run's best checkpoint on the test or validation split, domain by domain.

    evaluate MODEL_OR_RUN_DIR [--split test|val] [--domains all|fashion_mnist,catalogue,...] [--output DIR]

Domains: Fashion-MNIST, and the shop photos' catalogue shots, studio shoes, phone photos and out-of-scope
items (the photo domains need the export: SHOP_PHOTOS_MIRROR). Each is reported apart: accuracy, how many
get a class at the "unsure" threshold and how accurate those answers are, and a confusion matrix.
The threshold is the model card's for a promoted model, else chosen on the validation split exactly as
promotion would choose it. Prints a table and writes `metrics.json`, `confusion_matrix.png` (Fashion-MNIST),
`confusion_<domain>.png`, `reliability.png` and `mistakes.png` into RUN_DIR/evaluation/<split>/ or
reports/<model>/<split>/. The validation split is rebuilt exactly as training held it out.
"""

import argparse
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from text_recognizer.datasets.download import DownloadError
from text_recognizer.datasets.fashion_mnist import DatasetSplits, load_fashion_mnist
from text_recognizer.datasets.labelled_split import FASHION_MNIST_DOMAIN, Split
from text_recognizer.datasets.photo_sets import load_photo_split
from text_recognizer.datasets.shop_photos import DOMAINS
from text_recognizer.datasets.versions import OFFICIAL_VERSION
from text_recognizer.evaluation import classification_report, domain_report
from text_recognizer.labels import OUT_OF_SCOPE
from text_recognizer.models import ClassifierModel
from text_recognizer.models.classifier import ArtifactError
from text_recognizer.paths import MODEL_CARD_NAME
from text_recognizer.preprocessing import SEPARATED_VIEW_SIDE
from text_recognizer.promoted import model_file
from training.calibration import (
    DEFAULT_UNSURE_TARGET_ACCURACY,
    CalibrationError,
    calibrate,
    choose_out_of_scope_offset,
    unsure_threshold,
)
from training.errors import USER_ERRORS
from training.image_grid import save_image_grid
from training.run_directory import RunDirectory
from training.tracking import tracker_for_run

MISTAKES_SHOWN = 24
ALL_DOMAINS = (FASHION_MNIST_DOMAIN, *DOMAINS)


def resolve(target: Path) -> tuple[Path, Path]:
    """The artifact to evaluate and the default output folder for a model file, a weights folder (its
    promoted version) or a run directory."""
    artifact = model_file(target)
    if artifact != target:
        return artifact, Path("reports") / artifact.parent.name
    if target.is_dir():
        return RunDirectory(target).best_checkpoint, target / "evaluation"
    return target, Path("reports") / target.stem


def training_data(model: ClassifierModel, photo_validation: bool) -> DatasetSplits:
    """The model's data version split as its training run split it (the validation hold-out included,
    its photos with their separated views, for calibration to choose with)."""
    data_config = model.metadata.get("config", {}).get("data", {})
    return load_fashion_mnist(
        version=data_config.get("version", OFFICIAL_VERSION),  # the validation split comes from it
        val_size=data_config.get("val_size", 5000),
        split_seed=data_config.get("split_seed", 0),
        mirror=data_config.get("mirror"),
        photo_validation=photo_validation,
        separated_view_side=SEPARATED_VIEW_SIDE,
    )


def calibration_images(model: ClassifierModel, count: int = 2000) -> torch.Tensor:
    """Images to measure activation ranges on for int8 computation: `count` drawn (seeded) from the
    model's training split as its run split its data version (never validation or test images; photos
    included where the version has them)."""
    train = training_data(model, photo_validation=False).train.images
    return train[torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:count]]


def evaluation_split(model: ClassifierModel, split: str) -> Split:
    """The split as the model's training run held it out: for validation, with the photo validation
    split when the model's data version has shop photos."""
    data = training_data(model, photo_validation=split == "val")
    return data.test if split == "test" else data.val


def evaluation_sets(model: ClassifierModel, split: str, domains: tuple[str, ...]) -> dict[str, Split]:
    """The wanted domains of `split`: Fashion-MNIST's part, and the photo split cut by domain."""
    if model.separated_view_side not in (0, SEPARATED_VIEW_SIDE):
        raise ArtifactError(
            f"the model averages with separated views at {model.separated_view_side} px; the evaluation "
            f"splits hold them at {SEPARATED_VIEW_SIDE} px only"
        )
    sets = {}
    if FASHION_MNIST_DOMAIN in domains:
        sets[FASHION_MNIST_DOMAIN] = evaluation_split(model, split).by_domain()[FASHION_MNIST_DOMAIN]
    if any(domain in DOMAINS for domain in domains):
        photos = load_photo_split(
            model.class_names, split, separated_view_side=SEPARATED_VIEW_SIDE
        ).by_domain()
        sets.update({domain: photos[domain] for domain in domains if domain in photos})
    return sets


def unsure_below(model: ClassifierModel, artifact: Path) -> tuple[float, str]:
    """The "unsure" threshold: from the model card beside the artifact when the card describes this very
    file, else chosen now on the validation split (with the temperature and the out-of-scope offset
    chosen there first), as promotion would."""
    card_path = artifact.with_name(MODEL_CARD_NAME)
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    value = card.get("confidence_threshold", {}).get("value")
    if value is not None and card.get("sha256") == hashlib.sha256(artifact.read_bytes()).hexdigest():
        return value, "model card"
    val = evaluation_split(model, "val")
    calibrate(model, val)
    choose_out_of_scope_offset(model, val)
    try:
        return unsure_threshold(model, val, DEFAULT_UNSURE_TARGET_ACCURACY)["value"], "validation split"
    except CalibrationError as error:  # a weak run is still evaluated: every image gets its class
        return 0.0, f"none usable, every image answered: {error}"


def plot_confusion(
    confusion_rows: list[list[int]],
    row_names: list[str],
    class_names: tuple[str, ...],
    path: Path,
    title: str,
) -> None:
    confusion = np.array(confusion_rows)
    figure, axes = plt.subplots(figsize=(8.5, 1.5 + 0.6 * len(row_names)))
    image = axes.imshow(confusion, cmap="Blues", aspect="auto")
    axes.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axes.set_yticks(range(len(row_names)), row_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    threshold = confusion.max() / 2
    for row in range(len(row_names)):
        for col in range(len(class_names)):
            value = int(confusion[row, col])
            color = "white" if value > threshold else "black"
            axes.text(col, row, str(value), ha="center", va="center", fontsize=8, color=color)
    axes.set_title(title)
    figure.colorbar(image, ax=axes, fraction=0.046)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_reliability(report: dict[str, Any], path: Path, title: str) -> None:
    bins = [b for b in report["calibration_bins"] if b["count"]]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(6, 7), height_ratios=[3, 1], sharex=True)
    centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
    width = bins[0]["upper"] - bins[0]["lower"] if bins else 0.05
    top.bar(centres, [b["accuracy"] for b in bins], width=width * 0.9, label="accuracy in bin")
    top.plot([0, 1], [0, 1], "k--", label="perfect calibration")
    top.set_ylabel("accuracy")
    top.set_title(f"{title}: reliability (ECE {report['expected_calibration_error']:.4f})")
    top.legend(loc="upper left")
    bottom.bar(centres, [b["count"] for b in bins], width=width * 0.9, color="gray")
    bottom.set_yscale("log")
    bottom.set_xlabel("confidence of the predicted class")
    bottom.set_ylabel("images")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_mistakes(
    split: Split, probabilities: torch.Tensor, class_names: tuple[str, ...], path: Path, title: str
) -> list[dict[str, Any]]:
    confidences, predicted = probabilities.max(dim=1)
    wrong = torch.nonzero(predicted != split.labels).flatten()
    worst = wrong[torch.argsort(confidences[wrong], descending=True)][:MISTAKES_SHOWN]
    listed = [
        {
            "index": index,
            "true": class_names[int(split.labels[index])],
            "predicted": class_names[int(predicted[index])],
            "confidence": float(confidences[index]),
        }
        for index in worst.tolist()
    ]
    save_image_grid(
        [split.images[item["index"]].numpy() for item in listed],
        [f"true {m['true']}\npred {m['predicted']} {m['confidence']:.0%}" for m in listed],
        path,
        f"{title}: most confident mistakes",
    )
    return listed


def evaluate(
    target: Path,
    split_name: str = "test",
    output: Path | None = None,
    domains: tuple[str, ...] = ALL_DOMAINS,
) -> dict[str, Any]:
    artifact, default_output = resolve(target)
    output = (output or default_output) / split_name
    model = ClassifierModel.load(artifact)
    threshold, threshold_source = unsure_below(model, artifact)
    sets = evaluation_sets(model, split_name, domains)
    output.mkdir(parents=True, exist_ok=True)
    title = f"{artifact.name} on {split_name}"
    report: dict[str, Any] = {"model": str(artifact), "split": split_name, "domains": {}}
    for domain, split in sets.items():
        probabilities = torch.softmax(model.logits(split.images, separated=split.separated), dim=1)
        result = domain_report(probabilities, split.labels, model.class_names, threshold, OUT_OF_SCOPE)
        report["domains"][domain] = result
        if domain == FASHION_MNIST_DOMAIN:  # the full report, at the top level as before
            report.update(classification_report(probabilities, split.labels, model.class_names))
            accuracy = f"accuracy {report['accuracy']:.2%}"
            plot_confusion(
                report["confusion_matrix"],
                list(model.class_names),
                model.class_names,
                output / "confusion_matrix.png",
                f"{title}: confusion matrix ({accuracy})",
            )
            plot_reliability(report, output / "reliability.png", title)
            report["most_confident_mistakes"] = plot_mistakes(
                split, probabilities, model.class_names, output / "mistakes.png", title
            )
        else:
            plot_confusion(
                result["confusion_matrix"],
                result["confusion_rows"],
                model.class_names,
                output / f"confusion_{domain}.png",
                f"{title}, {domain} photos (accuracy {result['accuracy']:.2%})",
            )
    report.update(unsure_below=threshold, unsure_below_from=threshold_source)
    (output / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    tracker = tracker_for_run(target, logging.getLogger("release.evaluate")) if target.is_dir() else None
    if tracker:
        tracker.log_artifacts(sorted(output.iterdir()), f"evaluation/{split_name}")
        metrics = {f"{split_name}_{d}_accuracy": r["accuracy"] for d, r in report["domains"].items()}
        if "expected_calibration_error" in report:
            metrics[f"{split_name}_ece"] = report["expected_calibration_error"]
        tracker.log_metrics(metrics)
    report["output"] = str(output)
    return report


def print_report(report: dict[str, Any]) -> None:
    print(f"{report['model']} on the {report['split']} split")
    print(f'"unsure" below confidence {report["unsure_below"]:.3f} (from: {report["unsure_below_from"]})')
    print(f"{'domain':<16}{'images':>8}{'accuracy':>10}{'answered':>10}{'acc. answered':>15}")
    for domain, result in report["domains"].items():
        when_answered = result.get("accuracy_when_answered")
        print(
            f"{domain:<16}{result['images']:>8}{result['accuracy']:>10.2%}{result['answered_with_a_class']:>10.2%}"
            f"{'-' if when_answered is None else f'{when_answered:.2%}':>15}"
        )
    print("(out-of-scope: accuracy is the share answered 'not one of the ten': out of scope or unsure)")
    if "per_class" in report:
        ece = report["expected_calibration_error"]
        print(
            f"\nFashion-MNIST: accuracy {report['accuracy']:.4f}   loss {report['loss']:.4f}   ECE {ece:.4f}"
        )
        print(f"{'class':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
        for row in report["per_class"]:
            print(
                f"{row['class']:<14}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}"
                f"{row['support']:>9}"
            )
    print(f"written: {report['output']}/metrics.json and plots")


def parse_domains(text: str) -> tuple[str, ...]:
    if text == "all":
        return ALL_DOMAINS
    domains = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(set(domains) - set(ALL_DOMAINS))
    if unknown or not domains:
        raise argparse.ArgumentTypeError(
            f"unknown domain(s) {unknown}; choose from all, {', '.join(ALL_DOMAINS)}"
        )
    return domains


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", type=Path, metavar="MODEL_OR_RUN_DIR")
    parser.add_argument("--split", choices=("test", "val"), default="test")
    parser.add_argument(
        "--domains",
        type=parse_domains,
        default=ALL_DOMAINS,
        help="all (default), or a comma-separated list of " + ", ".join(ALL_DOMAINS),
    )
    parser.add_argument("--output", type=Path, help="folder for the report (a subfolder per split)")
    args = parser.parse_args(argv)
    try:
        print_report(evaluate(args.target, args.split, args.output, args.domains))
    except (*USER_ERRORS, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        if isinstance(error, DownloadError):
            print(
                "(the photo domains need the shop photo export; or pass --domains fashion_mnist)",
                file=sys.stderr,
            )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
