"""The workflow the project exists for, on real photos, as the README shows it: a data version with the
shop photos, the labelling queue on a pool of photos, a relabelled and a replaced photo, a new version, a
run on it. Every step is the real command, run in a copy of the project (so versions and runs land there)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from text_recognizer.datasets.shop_photos import (
    EXCLUDED,
    LabelMapping,
    iter_image_bytes,
    labelled_photos,
    read_photos,
    read_splits,
)
from text_recognizer.datasets.versions import DataVersion
from text_recognizer.labels import slug
from text_recognizer.promoted import promoted_model_path

from .test_shop_photos import PHOTO_VERSION, SHOP_FIXTURES

NEW = f"{PHOTO_VERSION}-relabelled"  # the version the labelling round makes

pytestmark = pytest.mark.slow


def run(project: Path, *args: str, status: int = 0) -> str:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
    }
    result = subprocess.run([sys.executable, *args], cwd=project, capture_output=True, text=True, env=env)
    assert result.returncode == status, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_queue_relabel_replace_new_version_and_a_run_on_real_photos(
    pipeline_copy: Path, tmp_path: Path
) -> None:
    project = pipeline_copy
    # The photo version as a clean clone gets it: rebuilt from v1, the export, the mapping and the splits.
    assert "verified" in run(project, "-m", "curation.data_versions", "pull", PHOTO_VERSION)
    # A pool of real photos that are not in any evaluation split (their labels unknown to the queue).
    mapping = LabelMapping.load(DataVersion.read(PHOTO_VERSION).class_names)
    splits = read_splits()
    pool_photos = [
        p for p in read_photos(SHOP_FIXTURES) if splits[p.image] == "train" and mapping.target(p) != EXCLUDED
    ]
    pool = tmp_path / "pool"
    pool.mkdir()
    for name, data in iter_image_bytes(SHOP_FIXTURES, [p.image for p in pool_photos]):
        (pool / name.replace("/", "_")).write_bytes(data)
    queue_dir = tmp_path / "queue"
    run(project, "-m", "curation.select_for_labeling", "--pool", str(pool), "--n", "8", "--model",
        str(promoted_model_path()), "--out", str(queue_dir))  # fmt: skip
    table = queue_dir / "queue.csv"
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 8 and (queue_dir / "contact_sheet.png").read_bytes().startswith(b"\x89PNG")
    # A person labels the queue (here: the mapped label of each photo), leaves one row for later, and
    # replaces the first shop photo of the photo version's training split with a relabelled one.
    truth = {p.image.replace("/", "_"): mapping.target(p) for p in pool_photos}
    for row in rows[:-1]:
        row["label"] = truth[Path(row["path"]).name]
    first_shop_photo = 60_000  # the training split: the release's 60,000 images, then the shop photos
    rows[0]["replaces"] = str(first_shop_photo)
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0].keys()])
        writer.writeheader()
        writer.writerows({**row, "replaces": row.get("replaces") or ""} for row in rows)
    # A validation photo slipped in among the labels: no version is made, and the error names it.
    val_photo = next(p.image for p in read_photos(SHOP_FIXTURES) if splits[p.image] == "val")
    leaked = tmp_path / "leaked" / "bag"
    leaked.mkdir(parents=True)
    (leaked / "leak.jpg").write_bytes(dict(iter_image_bytes(SHOP_FIXTURES, [val_photo]))[val_photo])
    refused = run(project, "-m", "curation.data_versions", "add", NEW, "--from", PHOTO_VERSION, "--images",
                  str(leaked.parent), status=2)  # fmt: skip
    assert f"bag/leak.jpg (= {val_photo})" in refused and not (project / f"data/versions/{NEW}.dvc").exists()
    output = run(project, "-m", "curation.data_versions", "add", NEW, "--from", PHOTO_VERSION, "--csv",
                 str(table), "--description", "labelling queue, first round")  # fmt: skip
    assert f"created data version {NEW}" in output
    base, new = (DataVersion.read(name, project / "data" / "versions") for name in (PHOTO_VERSION, NEW))
    assert new.counts["train"] == base.counts["train"] + 6, "seven labelled rows: one replaces, six appended"
    assert new.class_names == base.class_names and new.base == PHOTO_VERSION
    replaced = next(source for source in new.sources if "replaces" in source)
    slugs = [slug(name) for name in base.class_names]
    assert replaced == {"source": rows[0]["path"], "label": slugs.index(truth[Path(rows[0]["path"]).name]),
                        "replaces": first_shop_photo}  # fmt: skip
    # A run on the new version: it trains on v3 and validates on Fashion-MNIST's hold-out and the photos.
    run(project, "-m", "training.cli", "--config", "training/configs/smoke.yaml", "--run-dir", "runs/new",
        f"data.version={NEW}", "tracking.enabled=false")  # fmt: skip
    summary = json.loads((project / "runs" / "new" / "summary.json").read_text())
    assert summary["data"]["version"] == NEW and summary["data"]["version_hash"] == new.sha256
    _, photo_val = labelled_photos(base.class_names, splits=("val",))
    assert summary["data"]["val_images"] == 500 + len(photo_val), "smoke's 500 held out, and the photo split"
