"""Evaluate a model artifact or a run's best checkpoint on the test or validation split.

    evaluate MODEL_OR_RUN_DIR [--split test|val] [--output DIR]

Prints a per-class table and writes `metrics.json`, `confusion_matrix.png`, `reliability.png` and
`mistakes.png` (the most confident mistakes) into RUN_DIR/evaluation/<split>/ or reports/<model>-<split>/.
The validation split is rebuilt exactly as training held it out (size and seed from the artifact).
"""

import argparse
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
from text_recognizer.datasets.fashion_mnist import Split, load_fashion_mnist
from text_recognizer.datasets.versions import OFFICIAL_VERSION, DataVersionError
from text_recognizer.evaluation import classification_report
from text_recognizer.models import ArtifactError, ClassifierModel
from training.image_grid import save_image_grid
from training.run_directory import RunDirectory
from training.tracking import tracker_for_run

MISTAKES_SHOWN = 24


def resolve(target: Path) -> tuple[Path, Path]:
    """The artifact to evaluate and the default output folder for a model file or a run directory."""
    if target.is_dir():
        return RunDirectory(target).best_checkpoint, target / "evaluation"
    return target, Path("reports") / target.stem


def evaluation_split(model: ClassifierModel, split: str) -> Split:
    data_config = model.metadata.get("config", {}).get("data", {})
    data = load_fashion_mnist(
        version=data_config.get("version", OFFICIAL_VERSION),  # the validation split comes from it
        val_size=data_config.get("val_size", 5000),
        split_seed=data_config.get("split_seed", 0),
        mirror=data_config.get("mirror"),
    )
    return data.test if split == "test" else data.val


def plot_confusion(report: dict[str, Any], class_names: tuple[str, ...], path: Path, title: str) -> None:
    confusion = np.array(report["confusion_matrix"])
    figure, axes = plt.subplots(figsize=(8.5, 7.5))
    image = axes.imshow(confusion, cmap="Blues")
    axes.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    axes.set_yticks(range(len(class_names)), class_names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    threshold = confusion.max() / 2
    for row in range(len(class_names)):
        for col in range(len(class_names)):
            value = int(confusion[row, col])
            color = "white" if value > threshold else "black"
            axes.text(col, row, str(value), ha="center", va="center", fontsize=8, color=color)
    axes.set_title(f"{title}: confusion matrix (accuracy {report['accuracy']:.2%})")
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


def evaluate(target: Path, split_name: str = "test", output: Path | None = None) -> dict[str, Any]:
    artifact, default_output = resolve(target)
    output = (output or default_output) / split_name
    model = ClassifierModel.load(artifact)
    split = evaluation_split(model, split_name)
    probabilities = torch.softmax(model.logits(split.images), dim=1)
    report = classification_report(probabilities, split.labels, model.class_names)
    output.mkdir(parents=True, exist_ok=True)
    title = f"{artifact.name} on {split_name}"
    plot_confusion(report, model.class_names, output / "confusion_matrix.png", title)
    plot_reliability(report, output / "reliability.png", title)
    report["most_confident_mistakes"] = plot_mistakes(
        split, probabilities, model.class_names, output / "mistakes.png", title
    )
    report.update(model=str(artifact), split=split_name)
    (output / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    tracker = tracker_for_run(target, logging.getLogger("training.evaluate")) if target.is_dir() else None
    if tracker:
        tracker.log_artifacts(sorted(output.iterdir()), f"evaluation/{split_name}")
        tracker.log_metrics({f"{split_name}_ece": report["expected_calibration_error"]})
    report["output"] = str(output)
    return report


def print_report(report: dict[str, Any]) -> None:
    print(f"{report['model']} on the {report['split']} split ({report['images']} images)")
    ece = report["expected_calibration_error"]
    print(f"accuracy {report['accuracy']:.4f}   loss {report['loss']:.4f}   ECE {ece:.4f}")
    print(f"{'class':<14}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}")
    for row in report["per_class"]:
        print(
            f"{row['class']:<14}{row['precision']:>10.4f}{row['recall']:>10.4f}{row['f1']:>10.4f}{row['support']:>9}"
        )
    print(f"written: {report['output']}/metrics.json, confusion_matrix.png, reliability.png, mistakes.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("target", type=Path, metavar="MODEL_OR_RUN_DIR")
    parser.add_argument("--split", choices=("test", "val"), default="test")
    parser.add_argument("--output", type=Path, help="folder for the report (a subfolder per split)")
    args = parser.parse_args(argv)
    try:
        print_report(evaluate(args.target, args.split, args.output))
    except (ArtifactError, DataVersionError, DownloadError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
