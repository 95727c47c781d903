"""Promote a finished run's best checkpoint to the production artifact, with a model card.

    promote RUN_DIR [--min-test-accuracy 0.94] [--max-size-mb 1.0] [--weights-dir text_recognizer/weights]

Writes `model.pt` (the run's weights with a temperature fitted on the validation split, so that
confidences are calibrated), `model_card.json` and `MODEL_CARD.md`, each atomically. Refuses a run whose
summary is missing, whose test accuracy is below the floor, or whose checkpoint is over the size budget
(the temperature adds a few bytes; a test holds the shipped `model.pt` to the budget too).
The card also carries the confidence threshold, chosen on the validation split, below which the service
answers "unsure".
"""

import argparse
import hashlib
import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from text_recognizer.atomic import write_json_atomically, write_text_atomically
from text_recognizer.models import ClassifierModel
from text_recognizer.paths import WEIGHTS_DIR
from training.calibration import DEFAULT_UNSURE_TARGET_ACCURACY, calibrate, unsure_threshold
from training.errors import USER_ERRORS
from training.evaluate import evaluation_split
from training.run_directory import RunDirectory
from training.tracking import tracker_for_run

DEFAULT_MIN_TEST_ACCURACY = 0.94  # the product's performance floor for a served model
DEFAULT_MAX_SIZE_MB = 1.0  # the product's model-size budget: the artifact file, weights and card data
REGISTERED_MODEL_NAME = "apparel-classifier"


class PromotionError(RuntimeError):
    pass


def model_card(
    run: RunDirectory, summary: dict[str, Any], model: ClassifierModel, artifact: bytes
) -> dict[str, Any]:
    digest = hashlib.sha256(artifact).hexdigest()
    metrics = model.metadata["metrics"]
    return {
        "name": summary["name"],
        "version": digest[:12],
        "sha256": digest,
        "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "source_run": run.path.name,
        "network": {"name": model.network_name, "args": model.network_args},
        "parameters": model.parameter_count,
        "size_bytes": len(artifact),
        "classes": list(model.class_names),
        "metrics": {
            "best_epoch": summary["best_epoch"],
            "val_loss": metrics["val_loss"],
            "val_accuracy": metrics["val_accuracy"],
            "test_loss": summary["test"]["loss"],
            "test_accuracy": summary["test"]["accuracy"],
        },
        "training_seconds": summary["train_seconds"],
        "data": summary["data"],
        "config": model.metadata["config"],
        "git_commit": summary["environment"]["git_commit"],
        "environment": summary["environment"],
    }


def card_markdown(card: dict[str, Any]) -> str:
    metrics, threshold = card["metrics"], card["confidence_threshold"]
    sure, sure_accuracy = f"{threshold['val_coverage']:.1%}", f"{threshold['val_accuracy_when_sure']:.2%}"
    checksums = "\n".join(f"| `{name}` | `{digest}` |" for name, digest in card["data"]["checksums"].items())
    return f"""# Model card: {card["name"]} ({card["version"]})

Fashion-MNIST apparel classifier, promoted {card["promoted_at"]} from run `{card["source_run"]}`.

| | |
| --- | --- |
| network | `{card["network"]["name"]}` `{json.dumps(card["network"]["args"])}` |
| parameters | {card["parameters"]:,} |
| artifact size | {card["size_bytes"] / 1e6:.2f} MB (`model.pt`, sha256 `{card["sha256"]}`) |
| test accuracy | {metrics["test_accuracy"]:.2%} (loss {metrics["test_loss"]:.4f}, official test set) |
| validation accuracy | {metrics["val_accuracy"]:.2%} (loss {metrics["val_loss"]:.4f}) |
| best epoch | {metrics["best_epoch"]} |
| training time | {card["training_seconds"] / 60:.1f} min on {card["environment"]["device"]} |
| calibration | temperature {card["calibration"]["temperature"]:.3f} (chosen on validation: ECE \
{card["calibration"]["val_ece_before"]:.4f} -> {card["calibration"]["val_ece_after"]:.4f}) |
| "unsure" below confidence | {threshold["value"]:.3f} (chosen on validation: {sure} of images answered, \
{sure_accuracy} accurate) |
| data version | {card["data"]["version"]} (sha256 `{card["data"]["version_hash"]}`) |
| git commit | `{card["git_commit"]}` |
| torch | {card["environment"]["torch"]} |

Classes: {", ".join(card["classes"])}.

| data file | sha256 |
| --- | --- |
{checksums}

The full configuration is in `model_card.json`.
"""


def promote(
    run_path: Path,
    weights_dir: Path = WEIGHTS_DIR,
    min_test_accuracy: float = DEFAULT_MIN_TEST_ACCURACY,
    unsure_target_accuracy: float = DEFAULT_UNSURE_TARGET_ACCURACY,
    max_size_mb: float = DEFAULT_MAX_SIZE_MB,
) -> dict[str, Any]:
    run = RunDirectory(run_path)
    if not run.summary_path.exists():
        raise PromotionError(
            f"{run_path} has no summary.json: the run did not finish (resume it, then promote)"
        )
    summary = json.loads(run.summary_path.read_text())
    accuracy = summary["test"]["accuracy"]
    if accuracy < min_test_accuracy:
        raise PromotionError(
            f"test accuracy {accuracy:.4f} is below the promotion floor {min_test_accuracy:.4f}"
        )
    size_mb = run.best_checkpoint.stat().st_size / 1e6
    if size_mb > max_size_mb:
        raise PromotionError(
            f"the artifact is {size_mb:.2f} MB, over the size budget of {max_size_mb:.2f} MB"
        )
    model = ClassifierModel.load(run.best_checkpoint)  # proves the artifact loads on its own
    val = evaluation_split(model, "val")
    calibration_report = calibrate(model, val)
    threshold = unsure_threshold(model, val, unsure_target_accuracy)
    # Everything is computed before the served model is replaced, so a failure leaves the old one whole.
    weights_dir.mkdir(parents=True, exist_ok=True)
    promoted = weights_dir / "model.pt"
    model.save(promoted)  # the run's weights, plus the temperature
    card = model_card(run, summary, model, promoted.read_bytes())
    card["calibration"] = calibration_report
    card["confidence_threshold"] = threshold
    tracker = tracker_for_run(run_path, logging.getLogger("training.promote"))
    if tracker:  # the registered version is the served artifact, temperature included
        version = tracker.register_model(REGISTERED_MODEL_NAME, [promoted])
        if version:
            card["mlflow"] = {
                "run_id": tracker.run_id,
                "registered_model": REGISTERED_MODEL_NAME,
                "version": version,
            }
    write_json_atomically(weights_dir / "model_card.json", card)
    write_text_atomically(weights_dir / "MODEL_CARD.md", card_markdown(card))
    if tracker:
        tracker.log_artifacts([weights_dir / "model_card.json", weights_dir / "MODEL_CARD.md"], "model")
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--min-test-accuracy", type=float, default=DEFAULT_MIN_TEST_ACCURACY)
    parser.add_argument(
        "--max-size-mb", type=float, default=DEFAULT_MAX_SIZE_MB, help="refuse a larger checkpoint"
    )
    parser.add_argument("--weights-dir", type=Path, default=WEIGHTS_DIR)
    parser.add_argument(
        "--unsure-target-accuracy",
        type=float,
        default=DEFAULT_UNSURE_TARGET_ACCURACY,
        help="below the confidence at which validation predictions reach this accuracy, serve 'unsure'",
    )
    args = parser.parse_args(argv)
    try:
        card = promote(
            args.run_dir,
            args.weights_dir,
            args.min_test_accuracy,
            args.unsure_target_accuracy,
            args.max_size_mb,
        )
    except (PromotionError, FileNotFoundError, *USER_ERRORS) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"promoted {card['name']} {card['version']} (test accuracy {card['metrics']['test_accuracy']:.4f})")
    print(f"artifact:   {args.weights_dir / 'model.pt'}")
    print(f"model card: {args.weights_dir / 'MODEL_CARD.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
