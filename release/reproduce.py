"""Re-run a finished run from what it recorded and report, point by point, whether the result repeats.

    reproduce RUN_DIR [--runs-dir DIR]

Trains the recorded config (seed, data split, threads, everything) into a new run directory, then
compares: the best checkpoint's sha256, the summary metrics and every epoch's validation loss, and the
environment (python, torch, numpy, platform, device, threads, package versions, data version and files,
number of training processes) that would explain a difference. The data version's recorded hash is
required of the repeated run.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from text_recognizer.atomic import write_json_atomically
from text_recognizer.datasets.versions import resolve_version
from training.config import ConfigError, load_config
from training.errors import USER_ERRORS
from training.run_directory import RunDirectory
from training.trainer import start_run

ENVIRONMENT_KEYS = (
    "git_commit",
    "python",
    "torch",
    "numpy",
    "platform",
    "processor",
    "device",
    "device_name",
    "threads",
)
SUMMARY_METRICS = ("best_epoch", "best_val_loss", "best_val_accuracy")


def environment_differences(original: dict[str, Any], repeated: dict[str, Any]) -> list[str]:
    differences = [
        f"{key}: {original.get(key)!r} -> {repeated.get(key)!r}"
        for key in ENVIRONMENT_KEYS
        if original.get(key) != repeated.get(key)
    ]
    before, after = original.get("packages", {}), repeated.get("packages", {})
    differences += [
        f"package {name}: {before.get(name)} -> {after.get(name)}"
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    ]
    return differences


def data_differences(original: dict[str, Any], repeated: dict[str, Any]) -> list[str]:
    """The data version, its hash, every file's sha256, and how many processes shared the training."""
    differences = [
        f"{key}: {original['data'].get(key)!r} -> {repeated['data'].get(key)!r}"
        for key in ("version", "version_hash", "train_images", "val_images")
        if original["data"].get(key) != repeated["data"].get(key)
    ]
    before, after = original["data"].get("checksums", {}), repeated["data"].get("checksums", {})
    differences += [
        f"file {name}: {before.get(name)} -> {after.get(name)}"
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    ]
    processes = [summary.get("distributed", {}).get("processes", 1) for summary in (original, repeated)]
    if processes[0] != processes[1]:
        differences.append(f"training processes: {processes[0]} -> {processes[1]}")
    return differences


def compare(original: RunDirectory, repeated: RunDirectory) -> dict[str, Any]:
    first = json.loads(original.summary_path.read_text())
    second = json.loads(repeated.summary_path.read_text())
    metric_differences = {
        key: {"original": first[key], "reproduced": second[key]}
        for key in SUMMARY_METRICS
        if first[key] != second[key]
    }
    if first["test"] != second["test"]:
        metric_differences["test"] = {"original": first["test"], "reproduced": second["test"]}
    epochs = [
        {"epoch": a["epoch"], "original": a["val_loss"], "reproduced": b["val_loss"]}
        for a, b in zip(original.read_metrics(), repeated.read_metrics(), strict=False)
        if a["val_loss"] != b["val_loss"]
    ]
    return {
        "original": str(original.path),
        "reproduction": str(repeated.path),
        "identical_best_checkpoint": first["best_checkpoint_sha256"] == second["best_checkpoint_sha256"],
        "best_checkpoint_sha256": {
            "original": first["best_checkpoint_sha256"],
            "reproduced": second["best_checkpoint_sha256"],
        },
        "metric_differences": metric_differences,
        "epochs_with_different_val_loss": epochs,
        "environment_differences": environment_differences(first["environment"], second["environment"])
        + data_differences(first, second),
    }


def reproduce(run_path: Path, runs_dir: Path | None = None) -> dict[str, Any]:
    original = RunDirectory(run_path)
    if not original.summary_path.exists():
        raise ConfigError(f"{run_path} has no summary.json: only a finished run can be reproduced")
    overrides = [f"runs_dir={runs_dir}"] if runs_dir else []
    config = load_config(original.config_path, overrides)
    recorded_hash = json.loads(original.summary_path.read_text())["data"].get("version_hash")
    # The same bytes or a clear refusal, never silently other data (checked, not written into the
    # config: the config is part of the checkpoint, whose bytes are compared).
    resolve_version(config.data.version, expected_hash=recorded_hash, mirror=config.data.mirror)
    summary = start_run(config)
    report = compare(original, RunDirectory(Path(summary["run_dir"])))
    write_json_atomically(Path(summary["run_dir"]) / "reproduction.json", report)
    return report


def print_report(report: dict[str, Any]) -> None:
    verdict = "IDENTICAL" if report["identical_best_checkpoint"] else "DIFFERENT"
    print(f"\nreproduction of {report['original']} -> {report['reproduction']}")
    print(
        f"best checkpoint: {verdict} (sha256 {report['best_checkpoint_sha256']['original'][:16]}... vs "
        f"{report['best_checkpoint_sha256']['reproduced'][:16]}...)"
    )
    for key, values in report["metric_differences"].items():
        print(f"metric {key}: {values['original']} -> {values['reproduced']}")
    if not report["metric_differences"]:
        print("metrics: identical (best epoch, validation loss and accuracy, test loss and accuracy)")
    print(f"epochs with a different validation loss: {len(report['epochs_with_different_val_loss'])}")
    for line in report["environment_differences"] or ["none"]:
        print(f"environment difference: {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument(
        "--runs-dir", type=Path, help="where the reproduction goes (default: the recorded runs_dir)"
    )
    args = parser.parse_args(argv)
    try:
        report = reproduce(args.run_dir, args.runs_dir)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_report(report)
    return 0 if report["identical_best_checkpoint"] else 1


if __name__ == "__main__":
    sys.exit(main())
