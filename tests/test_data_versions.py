"""Data versions (DVC): creation from labelled photos, tamper detection, pull, refusal, the pipeline."""

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
import yaml

from curation import data_versions
from curation.data_versions import DvcError, create_version, pull_version, verify_versions
from curation.labelled_images import from_csv, from_folder
from support.product_photos import product_photo
from text_recognizer.atomic import folder_lock
from text_recognizer.datasets.fashion_mnist import read_split
from text_recognizer.datasets.versions import DataVersion, DataVersionError, official_version, resolve_version
from text_recognizer.labels import LabelError
from text_recognizer.preprocessing import image_bytes_to_input
from text_recognizer.promoted import promoted_model_path
from training.config import CONFIGS_DIR, load_config
from training.trainer import start_run

from .conftest import DVC, FIXTURES_DIR, REPO_ROOT

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")  # fmt: skip


@pytest.fixture
def shop_photos(tmp_path: Path) -> Path:
    """Real test images as shop photos in <class>/<image> folders named three ways."""
    split = read_split(FIXTURES_DIR, "test")
    folder = tmp_path / "photos"
    for index, name in [(9, "ankle-boot"), (1, "1"), (8, "Bag")]:
        (folder / name).mkdir(parents=True)
        for n, position in enumerate((split.labels == index).nonzero().flatten()[:2].tolist()):
            photo = product_photo(split.images[position].numpy(), seed=position)
            (folder / name / f"{n}.jpg").write_bytes(photo)
    return folder


def test_a_version_adds_labelled_photos_via_the_serving_pipeline(dvc_repo: Path, shop_photos: Path) -> None:
    images = from_folder(shop_photos, CLASSES)
    version = create_version("v2", base="v1", images=images, description="shop photos", root=dvc_repo)
    v1 = DataVersion.read("v1")
    directory = dvc_repo / "data" / "versions" / "v2"
    train = read_split(directory, "train")
    assert len(train) == 60006 and version.counts == {"train": 60006, "test": 10000}
    assert train.labels[-6:].tolist() == [1, 1, 8, 8, 9, 9]  # folders in name order: 1, Bag, ankle-boot
    photo = (shop_photos / "1" / "0.jpg").read_bytes()
    assert torch.equal(train.images[60000], torch.from_numpy(image_bytes_to_input(photo)))
    assert torch.equal(train.images[:60000], read_split(resolve_version("v1")[1], "train").images)
    assert (
        version.files["t10k-images-idx3-ubyte.gz"] == v1.files["t10k-images-idx3-ubyte.gz"]
    )  # test unchanged
    record = DataVersion.read("v2", dvc_repo / "data" / "versions")
    assert (
        record == version and record.base == "v1" and record.sources[0] == {"source": "1/0.jpg", "label": 1}
    )
    dvc_record = yaml.safe_load((dvc_repo / "data" / "versions" / "v2.dvc").read_text())
    assert dvc_record["outs"][0]["path"] == "v2" and dvc_record["outs"][0]["nfiles"] == 4
    assert "/v2" in (dvc_repo / "data" / "versions" / ".gitignore").read_text().split()
    assert any((dvc_repo.parent / "storage").rglob("*")), "pushed to the default remote"
    assert all(path.stat().st_mode & 0o222 == 0 for path in directory.iterdir())
    assert verify_versions([], root=dvc_repo) == [
        f"absent v1: not in {dvc_repo / 'data' / 'versions' / 'v1'}; ./tasks/data.sh pull v1",
        f"ok     v2 ({version.short_hash}): 4 files match",
    ]
    same = create_version("v2b", base="v1", images=images, description="again", root=dvc_repo, push=False)
    assert same.sha256 == version.sha256, "content-hashed: the same inputs give the same hash"


def test_verify_names_every_changed_byte_and_training_refuses_it(dvc_repo: Path, shop_photos: Path) -> None:
    images = from_folder(shop_photos, CLASSES)[:1]
    create_version("v2", base="v1", images=images, description="", root=dvc_repo, push=False)
    labels = dvc_repo / "data" / "versions" / "v2" / "train-labels-idx1-ubyte.gz"
    labels.chmod(0o644)
    data = bytearray(labels.read_bytes())
    data[-20] ^= 1
    labels.write_bytes(bytes(data))
    (dvc_repo / "data" / "versions" / "v2" / "notes.txt").write_text("stray")
    (line,) = verify_versions(["v2"], root=dvc_repo)
    assert line.startswith("FAIL   v2") and "train-labels-idx1-ubyte.gz changed" in line
    assert "notes.txt is not part of the version" in line
    with pytest.raises(DataVersionError, match=r"train-labels-idx1-ubyte\.gz changed"):
        resolve_version("v2", versions_dir=dvc_repo / "data" / "versions")


def test_an_edited_record_is_detected(dvc_repo: Path) -> None:
    record = dvc_repo / "data" / "versions" / "v1.dvc"
    raw = yaml.safe_load(record.read_text())
    raw["meta"]["data_version"]["files"]["train-labels-idx1-ubyte.gz"] = "0" * 64
    record.write_text(yaml.safe_dump(raw))
    with pytest.raises(DataVersionError, match="edited record"):
        DataVersion.read("v1", dvc_repo / "data" / "versions")


def test_replacing_and_csv_input(dvc_repo: Path, shop_photos: Path, tmp_path: Path) -> None:
    table = tmp_path / "labels.csv"
    table.write_text(f"path,label,replaces\n{shop_photos}/Bag/0.jpg,bag,0\n{shop_photos}/1/0.jpg,Trouser,\n")
    images = from_csv(table, CLASSES)
    version = create_version("v3", base="v1", images=images, description="", root=dvc_repo, push=False)
    train = read_split(dvc_repo / "data" / "versions" / "v3", "train")
    assert version.counts["train"] == 60001 and train.labels[0] == 8 and train.labels[-1] == 1
    assert version.sources[0]["replaces"] == 0


def test_bad_input_is_refused_with_a_clear_error_and_leaves_nothing(dvc_repo: Path, shop_photos: Path,
                                                                   tmp_path: Path) -> None:  # fmt: skip
    images = from_folder(shop_photos, CLASSES)
    with pytest.raises(DataVersionError, match="must be lowercase"):
        create_version("V 2", base="v1", images=images, description="", root=dvc_repo)
    with pytest.raises(DataVersionError, match=r"unknown data version 'v7'.*known versions: v1"):
        create_version("v2", base="v7", images=images, description="", root=dvc_repo)
    with pytest.raises(DataVersionError, match="already exists"):
        create_version("v1", base="v1", images=images, description="", root=dvc_repo)
    (shop_photos / "hats").mkdir()
    with pytest.raises(LabelError, match=r"unknown class 'hats'.*9 ankle-boot"):
        from_folder(shop_photos, CLASSES)
    (tmp_path / "bad.csv").write_text("file,class\nx.png,1\n")
    with pytest.raises(LabelError, match="columns path,label"):
        from_csv(tmp_path / "bad.csv", CLASSES)
    (tmp_path / "bad.csv").write_text("path,label,replaces\nmissing.png,1,\n")
    with pytest.raises(LabelError, match=r"missing\.png: cannot read"):
        from_csv(tmp_path / "bad.csv", CLASSES)
    (tmp_path / "bad.csv").write_text(f"path,label,replaces\n{shop_photos}/1/0.jpg,1,٣\n")
    with pytest.raises(LabelError, match="replaces must be a training-image index, got '٣'"):
        from_csv(tmp_path / "bad.csv", CLASSES)
    (tmp_path / "bad.csv").write_text(f"path,label,replaces\n{shop_photos}/1/0.jpg,1,70000\n")
    with pytest.raises(LabelError, match="replaces index 70000, but the base has 60000"):
        create_version(
            "v2", base="v1", images=from_csv(tmp_path / "bad.csv", CLASSES), description="", root=dvc_repo
        )
    shutil.rmtree(dvc_repo / ".dvc")  # DVC itself fails: the half-made version must vanish
    with pytest.raises(DvcError, match="dvc add"):
        create_version("v2", base="v1", images=images[:1], description="", root=dvc_repo)
    assert sorted(p.name for p in (dvc_repo / "data" / "versions").iterdir()) == ["v1.dvc"]


def test_pull_restores_from_the_remote_or_rebuilds_a_release(dvc_repo: Path, shop_photos: Path) -> None:
    create_version(
        "v2", base="v1", images=from_folder(shop_photos, CLASSES)[:1], description="", root=dvc_repo
    )
    versions = dvc_repo / "data" / "versions"
    data_versions.remove_version_files(versions / "v2")
    assert pull_version("v2", root=dvc_repo) == versions / "v2"
    assert verify_versions(["v2"], root=dvc_repo)[0].startswith("ok")
    assert pull_version("v1", root=dvc_repo) == versions / "v1"  # not on the remote: from the downloader
    assert verify_versions(["v1"], root=dvc_repo)[0].startswith("ok")
    damaged = versions / "v1" / "t10k-labels-idx1-ubyte.gz"
    damaged.chmod(0o644)
    damaged.write_bytes(b"damaged")
    assert verify_versions(["v1"], root=dvc_repo)[0].startswith("FAIL")
    assert pull_version("v1", root=dvc_repo) == versions / "v1"  # a damaged copy is replaced, not trusted
    assert verify_versions(["v1"], root=dvc_repo)[0].startswith("ok")
    made = (versions / "v1").stat()
    assert pull_version("v1", root=dvc_repo) == versions / "v1"
    after = (versions / "v1").stat()  # an intact copy is kept: never removed under a reader (xdist)
    assert (after.st_ino, after.st_ctime_ns) == (made.st_ino, made.st_ctime_ns)
    pulled: list[Path] = []
    second = threading.Thread(target=lambda: pulled.append(pull_version("v1", root=dvc_repo)))
    with folder_lock(versions):  # another pull at work: this one waits for it (no shared staging folder)
        second.start()
        second.join(timeout=1.0)
        assert second.is_alive() and not pulled
    second.join(timeout=60)
    assert pulled == [versions / "v1"]


def test_training_refuses_a_wrong_version_hash_before_creating_anything(tmp_path: Path) -> None:
    config = load_config(
        CONFIGS_DIR / "smoke.yaml", [f"runs_dir={tmp_path / 'runs'}", "data.version_hash=" + "f" * 64]
    )
    with pytest.raises(DataVersionError, match="does not match data version v1, whose recorded hash is"):
        start_run(config)
    config = load_config(CONFIGS_DIR / "smoke.yaml", [f"runs_dir={tmp_path / 'runs'}", "data.version=v9"])
    with pytest.raises(DataVersionError, match="unknown data version 'v9'"):
        start_run(config)
    assert not (tmp_path / "runs").exists()


def test_cli_lists_and_verifies_the_committed_versions(capsys: pytest.CaptureFixture[str]) -> None:
    assert data_versions.main(["list"]) == 0
    assert "v1       fashion_mnist  6cfc94206146  60000  10000" in capsys.readouterr().out
    # v1 checked where present, named as absent where not (a clean clone): never a silent pass.
    present = (REPO_ROOT / "data" / "versions" / "v1").is_dir()
    assert data_versions.main(["verify", "v1"]) == 0
    status = "ok     v1 (6cfc94206146): 4 files match" if present else "absent v1: not in "
    assert capsys.readouterr().out.startswith(status)
    assert data_versions.main(["add", "v2", "--from", "v1", "--images", "/nonexistent"]) == 2
    assert "is not a directory of <class>/<image> files" in capsys.readouterr().err
    assert data_versions.main(["add", "v9", "--from", "v2", "--shop-photos", "--no-push"]) == 2
    assert "v2 already holds the shop photos' training split" in capsys.readouterr().err


def test_the_official_version_without_its_record_is_the_committed_record(tmp_path: Path) -> None:
    """An installed package has no version records; v1 then comes from the release's manifest."""
    assert official_version() == DataVersion.read("v1")
    assert DataVersion.read("v1", versions_dir=tmp_path) == official_version()
    with pytest.raises(DataVersionError, match="unknown data version 'v2'"):
        DataVersion.read("v2", versions_dir=tmp_path)


def test_the_train_stage_depends_on_all_library_code_but_not_the_promoted_weights() -> None:
    deps = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]["train"]["deps"]
    library = {path.split("/", 1)[1] for path in deps if path.startswith("text_recognizer/")}
    on_disk = {p.name for p in (REPO_ROOT / "text_recognizer").iterdir() if p.name != "__pycache__"}
    assert library == on_disk - {"weights"}


@pytest.mark.slow
def test_dvc_pipeline_runs_download_train_evaluate_and_reruns_only_what_changed(pipeline_copy: Path) -> None:
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("TEXT_RECOGNIZER_DATA_DIR", None)

    def repro() -> str:
        result = subprocess.run([DVC, "repro"], cwd=pipeline_copy, capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    first = repro()
    assert all(f"Running stage '{stage}'" in first for stage in ("download", "train", "evaluate"))
    metrics = yaml.safe_load((pipeline_copy / "reports/pipeline/test/metrics.json").read_text())
    assert metrics["accuracy"] > 0.6
    assert (pipeline_copy / "runs/pipeline/summary.json").exists() and (pipeline_copy / "dvc.lock").exists()
    assert "Data and pipelines are up to date" in repro()
    params = pipeline_copy / "params.yaml"
    params.write_text(params.read_text().replace("reports/pipeline", "reports/again"))
    promoted = promoted_model_path(pipeline_copy / "text_recognizer/weights")  # a promotion since
    card = promoted.with_name("MODEL_CARD.md")
    card.write_text(card.read_text() + "\npromoted again\n")
    third = repro()
    assert "Running stage 'evaluate'" in third and "Running stage 'train'" not in third
    assert "Stage 'download' didn't change" in third and "Stage 'train' didn't change" in third
