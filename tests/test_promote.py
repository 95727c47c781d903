"""Promotion of a run to the served artifact, and the consistency of the artifact shipped in the repo."""

import argparse
import hashlib
import json
import re
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

import api.predictor as predictor_module
from api.predictor import Predictor, artifact_and_card
from release.evaluate import calibration_images, evaluation_split
from release.promote import DEFAULT_MAX_SIZE_MB, floor_problems, parse_behaviour_bars, parse_floors
from release.promote import main as promote_main
from text_recognizer.behaviour import DEFAULT_BEHAVIOUR_BARS, behaviour_problems, behaviour_report
from text_recognizer.datasets.fashion_mnist import read_split
from text_recognizer.datasets.labelled_split import FASHION_MNIST_DOMAIN
from text_recognizer.models import ClassifierModel
from text_recognizer.models.classifier import ArtifactError
from text_recognizer.promoted import (
    CURRENT,
    PromotedModelError,
    model_file,
    promoted_model_path,
    publish,
    versions,
)

from .support.smoke_training import train_smoke


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, full_data_dir: Path) -> Path:
    return train_smoke(tmp_path_factory.mktemp("runs"))[0]


@pytest.mark.slow
def test_promotes_best_checkpoint_with_a_model_card(
    smoke_run: Path, tmp_path: Path, full_data_dir: Path
) -> None:
    weights = tmp_path / "weights"
    floors = ["--domain-floors", "catalogue=0"]  # the photo domains are evaluated; a smoke model has no floor
    smoke = ["--min-test-accuracy", "0.5", "--unsure-target-accuracy", "0.9"]  # a 1-epoch model's reach
    bars = ["--behaviour-bars", "jpeg-changed=1,occlusion-lowered=0"]  # measured, not held
    assert promote_main([str(smoke_run), "--weights-dir", str(weights), *smoke, *floors, *bars]) == 0
    best = smoke_run / "checkpoints" / "best.pt"
    artifact = promoted_model_path(weights)
    promoted, trained = ClassifierModel.load(artifact), ClassifierModel.load(best)
    for name, tensor in trained.network.state_dict().items():
        assert torch.equal(promoted.network.state_dict()[name], tensor)
    assert trained.temperature == 1.0 and promoted.temperature != 1.0
    card = json.loads(artifact.with_name("model_card.json").read_text())
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert card["sha256"] == hashlib.sha256(artifact.read_bytes()).hexdigest()
    calibration = card["calibration"]
    assert (
        calibration["temperature"] == promoted.temperature and calibration["chosen_on"] == "validation split"
    )
    assert calibration["val_ece_after"] < calibration["val_ece_before"]
    assert card["metrics"]["test_accuracy"] == summary["test"]["accuracy"]
    assert card["network"]["name"] == "cnn" and card["parameters"] == summary["parameters"]
    assert card["data"]["checksums"] == summary["data"]["checksums"]
    markdown = artifact.with_name("MODEL_CARD.md").read_text()
    assert card["data"]["version"] == "v1"
    assert f"| data version | v1 (sha256 `{card['data']['version_hash']}`)" in markdown
    assert card["git_commit"] == summary["environment"]["git_commit"] and card["config"]["name"] == "smoke"
    assert card["version"] in markdown
    assert card["started_from"] is None and "| initial weights | random, seeded |" in markdown
    threshold = card["confidence_threshold"]
    assert 0 < threshold["value"] <= 1 and threshold["chosen_on"] == "validation split"
    assert threshold["val_accuracy_when_sure"] >= threshold["target_accuracy"] == 0.9
    assert 0.5 <= threshold["val_coverage"] < 1, "a threshold that answers most images, not all"
    assert Predictor.load(weights).version == card["version"]
    assert list(card["domains"]) == ["fashion_mnist", "catalogue", "shoes", "phone", "out-of-scope"]
    test = read_split(full_data_dir, "test")  # the card's figure is what the served artifact gives
    assert (
        card["domains"]["fashion_mnist"]["accuracy"]
        == promoted.evaluate(test.images, test.labels)["accuracy"]
    )
    assert promoted.test_time_flip is calibration["test_time_flip"]
    mirror = "averaged with each image" if promoted.test_time_flip else "not used"
    assert (
        f"| mirror image | {mirror} (chosen on validation: loss {calibration['val_loss_plain']:.4f}"
        in markdown
    )
    assert "| phone |" in markdown and card["domain_floors"] == {"catalogue": 0.0}
    # Fashion-MNIST alone (v1) has no out-of-scope class: no offset, and the card says why.
    assert card["out_of_scope_offset"]["value"] == promoted.out_of_scope_offset == 0.0
    assert "| out-of-scope offset | none (not applicable: the model has no out-of-scope class) |" in markdown
    fashion_val = evaluation_split(promoted, "val").by_domain()[FASHION_MNIST_DOMAIN]
    behaviour = behaviour_report(promoted, fashion_val.images, fashion_val.labels)
    assert card["behaviour"] == behaviour | {
        "split": "validation",
        "bars": {"jpeg-changed": 1.0, "occlusion-lowered": 0.0},
    }
    assert (
        behaviour["images"] == len(fashion_val) and behaviour["jpeg-changed"] < behaviour["occlusion-lowered"]
    )
    assert (
        f"| behaviour on validation | JPEG re-encoding (quality 85) changed {behaviour['jpeg-changed']:.2%} "
        "of answers (at most 100.0%)" in markdown
    )


def test_the_service_refuses_a_card_that_describes_other_weights(tmp_path: Path) -> None:
    """A promotion interrupted between the weights and the card left the old card beside new weights:
    the service took another model's version and threshold. Now it refuses to load."""
    shutil.copytree(promoted_model_path().parent, tmp_path / "weights")
    card_path = tmp_path / "weights" / "model_card.json"
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "sha256": "0" * 64}))
    with pytest.raises(ArtifactError, match=r"describes weights with sha256 0{64}, but .*model\.pt has"):
        Predictor.load(tmp_path / "weights" / "model.pt")
    card_path.write_text(json.dumps(card))
    assert Predictor.load(tmp_path / "weights" / "model.pt").version == card["version"]


def a_version(folder: Path, temperature: float) -> dict[str, Path]:
    """The shipped model with another temperature: other weights bytes, and a card that names them."""
    folder.mkdir()
    shipped = promoted_model_path()
    model = ClassifierModel.load(shipped)
    model.temperature = temperature
    model.save(folder / "model.pt")
    card = json.loads(shipped.with_name("model_card.json").read_text())
    digest = hashlib.sha256((folder / "model.pt").read_bytes()).hexdigest()
    (folder / "model_card.json").write_text(json.dumps({**card, "sha256": digest, "version": digest[:12]}))
    (folder / "MODEL_CARD.md").write_text(f"# {digest[:12]}\n")
    return {name: folder / name for name in ("model.pt", "model_card.json", "MODEL_CARD.md")}


def sha256_of(files: dict[str, Path]) -> str:
    return hashlib.sha256(files["model.pt"].read_bytes()).hexdigest()


def test_a_promotion_is_one_switch_that_keeps_the_previous_version_and_can_roll_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "weights"
    first, second, third = (a_version(tmp_path / str(t), t) for t in (0.7, 0.8, 0.9))
    names = [publish(weights, sha256_of(files), files).name for files in (first, second)]
    assert (weights / CURRENT).read_text() == names[1] + "\n"
    assert Predictor.load(weights).version == sha256_of(second)[:12]
    assert versions(weights) == names  # the previous version stays for readers in flight and rollback
    names.append(publish(weights, sha256_of(third), third).name)
    assert versions(weights) == names[1:]  # older ones go
    assert promote_main(["--rollback", "--weights-dir", str(weights)]) == 0
    assert f"serving {names[1]} again" in capsys.readouterr().out
    assert Predictor.load(weights).version == sha256_of(second)[:12]
    assert promote_main(["--rollback", "--weights-dir", str(weights)]) == 2
    assert f"keeps no version older than {names[1]} to roll back to" in capsys.readouterr().err
    assert [p.name for p in weights.iterdir() if p.name.startswith(".")] == []


def test_a_promotion_that_fails_before_the_switch_changes_nothing(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    served = a_version(tmp_path / "served", 0.7)
    publish(weights, sha256_of(served), served)
    before = sorted(p.name for p in weights.iterdir())
    broken = a_version(tmp_path / "broken", 0.8)
    broken["MODEL_CARD.md"].unlink()  # the process dies while writing the card
    with pytest.raises(FileNotFoundError):
        publish(weights, sha256_of(broken), broken)
    assert sorted(p.name for p in weights.iterdir()) == before  # no new version, no staging folder left
    assert Predictor.load(weights).version == sha256_of(served)[:12]


def test_readers_never_see_one_version_s_weights_beside_another_s_card(tmp_path: Path) -> None:
    """Before, `model.pt` was replaced first and the card after it, so a service starting during a
    promotion loaded new weights with the old card (refused now) or another model's threshold."""
    weights = tmp_path / "weights"
    candidates = [a_version(tmp_path / str(t), t) for t in (0.7, 0.8)]
    publish(weights, sha256_of(candidates[0]), candidates[0])
    stop, loaded, failures = threading.Event(), [], []

    def read() -> None:
        while not stop.is_set():
            try:  # as the service reads a version (it reads again from CURRENT one pruned meanwhile)
                _, data, card = artifact_and_card(weights)
                loaded.append(card["sha256"] == hashlib.sha256(data).hexdigest())
            except Exception as error:  # any failure to read a whole version counts
                failures.append(repr(error))

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(40):
        files = candidates[(i + 1) % 2]
        publish(weights, sha256_of(files), files)
    stop.set()
    reader.join()
    assert failures == [] and len(loaded) > 40 and all(loaded)


def test_a_damaged_current_does_not_block_the_next_promotion(tmp_path: Path) -> None:
    """Found in review: a damaged CURRENT made promotion fail after its new directory was in place."""
    weights = tmp_path / "weights"
    served = a_version(tmp_path / "served", 0.7)
    publish(weights, sha256_of(served), served)
    (weights / CURRENT).write_text("garbage\n")
    repaired = publish(weights, sha256_of(served), served)
    assert promoted_model_path(weights) == repaired / "model.pt"


def test_a_reader_that_two_promotions_overtook_reads_current_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in CI (the test above, 2026-11-30): a reader read CURRENT, two promotions passed before it
    looked for the directory, the second pruned it, and the reader failed. It now reads CURRENT again."""
    weights = tmp_path / "weights"
    versions_made = [a_version(tmp_path / str(t), t) for t in (0.7, 0.8, 0.9)]
    first = publish(weights, sha256_of(versions_made[0]), versions_made[0]).name
    for files in versions_made[1:]:
        publish(weights, sha256_of(files), files)
    assert not (weights / first).exists()  # pruned: only the current and the previous version are kept
    read_text, stale = Path.read_text, [f"{first}\n"]

    def overtaken(path: Path, *args: Any, **kwargs: Any) -> str:
        return stale.pop() if path.name == CURRENT and stale else read_text(path, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", overtaken)
    assert promoted_model_path(weights).parent.name == read_text(weights / CURRENT).strip()
    assert not stale  # the stale name was read first


def test_the_service_reads_again_a_version_pruned_under_it_and_never_loads_one_without_its_card(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service that read `model.pt` of a version that two promotions then pruned, card and all, used
    to load it without a card: no "unsure" threshold, a hash for a version. It reads CURRENT again."""
    weights = tmp_path / "weights"
    shutil.copytree(promoted_model_path().parent, weights / "20261129T000000000000Z-000000000000")
    (weights / CURRENT).write_text("20261129T000000000000Z-000000000000\n")
    card = json.loads((weights / "20261129T000000000000Z-000000000000" / "model_card.json").read_text())
    pruned = weights / "20261128T000000000000Z-111111111111"
    pruned.mkdir()
    shutil.copy(promoted_model_path(weights), pruned / "model.pt")  # its card already removed
    stale = [pruned / "model.pt"]
    monkeypatch.setattr(
        predictor_module, "model_file", lambda path: stale.pop() if stale else model_file(path)
    )
    served = Predictor.load(weights)
    assert not stale and served.version == card["version"]
    assert served.unsure_below == card["confidence_threshold"]["value"]
    monkeypatch.setattr(predictor_module, "model_file", lambda path: pruned / "model.pt")  # never settles
    with pytest.raises(FileNotFoundError, match=r"model_card\.json"):
        Predictor.load(weights)


def test_a_weights_folder_without_a_promoted_version_is_named(tmp_path: Path) -> None:
    with pytest.raises(PromotedModelError, match=r"holds no promoted model \(CURRENT is missing\)"):
        promoted_model_path(tmp_path)
    (tmp_path / CURRENT).write_text("../../etc\n")
    with pytest.raises(PromotedModelError, match=r"names '\.\./\.\./etc', which is not a version directory"):
        promoted_model_path(tmp_path)


@pytest.mark.slow
def test_refuses_an_unsure_threshold_that_would_leave_most_images_unanswered(
    smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before: an unreachable target gave the threshold 1.0 and NaN in the card, and the service then
    answered "unsure" to almost everything."""
    options = ["--min-test-accuracy", "0.5", "--domain-floors", "none", "--unsure-target-accuracy", "0.9999"]
    assert promote_main([str(smoke_run), "--weights-dir", str(tmp_path / "w"), *options]) == 2
    error = capsys.readouterr().err
    assert (
        "error: no usable 'unsure' threshold: for 100.0% accurate answers the service would answer only"
        in error
    )
    assert "lower --unsure-target-accuracy" in error and not (tmp_path / "w").exists()


@pytest.mark.slow
def test_refuses_a_run_below_the_accuracy_floor(
    smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        promote_main([str(smoke_run), "--weights-dir", str(tmp_path / "w"), "--min-test-accuracy", "0.99"])
        == 2
    )
    assert "below the promotion floor 0.9900" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_domain_floors_are_parsed_and_named_in_refusals() -> None:
    assert parse_floors("none") == {}
    assert parse_floors("catalogue=0.9, catalogue:answered=0.85") == {
        "catalogue": 0.9,
        "catalogue:answered": 0.85,
    }
    for bad in ("catalog=0.9", "phone:coverage=0.5", "phone"):
        with pytest.raises(argparse.ArgumentTypeError, match="DOMAIN=VALUE"):
            parse_floors(bad)
    assert parse_behaviour_bars("none") == {}
    assert parse_behaviour_bars("jpeg-changed=0.05") == {"jpeg-changed": 0.05}
    with pytest.raises(argparse.ArgumentTypeError, match="NAME one of jpeg-changed, occlusion-lowered"):
        parse_behaviour_bars("jpeg=0.05")
    with pytest.raises(argparse.ArgumentTypeError, match=r"a share from 0 to 1 is needed \(4% is 0\.04\)"):
        parse_behaviour_bars("jpeg-changed=4")
    with pytest.raises(argparse.ArgumentTypeError, match="or none"):
        parse_floors(" , ")
    report = {"jpeg-changed": 0.05, "occlusion-lowered": 0.65}
    assert behaviour_problems(report, {"jpeg-changed": 0.05, "occlusion-lowered": 0.65}) == []
    assert behaviour_problems(report, DEFAULT_BEHAVIOUR_BARS) == [
        "jpeg-changed 0.0500 is over its ceiling 0.0400",
        "occlusion-lowered 0.6500 is under its floor 0.7000",
    ]
    results = {"phone": {"accuracy": 0.61, "answered_with_a_class": 0.5}}
    assert floor_problems(results, {"phone": 0.6, "phone:answered": 0.7, "shoes": 0.9}) == [
        "phone share answered with a class 0.5000 is below its floor 0.7000",
        "shoes has no test photos to hold to its floor 0.9000",
    ]


@pytest.mark.slow
def test_int8_weights_fit_a_budget_that_refuses_float32_and_are_what_is_served(
    smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--weights int8`: the budget holds the file as written, calibration and every figure are the int8
    model's, the card says how many validation classes the int8 weights changed, the service loads it."""
    float_mb = (smoke_run / "checkpoints" / "best.pt").stat().st_size / 1e6
    budget = ["--max-size-mb", f"{float_mb * 0.6:.4f}"]
    arguments = [str(smoke_run), "--min-test-accuracy", "0.5", "--unsure-target-accuracy", "0.9",
                 "--domain-floors", "none", "--behaviour-bars", "none", *budget]  # fmt: skip
    assert promote_main([*arguments, "--weights-dir", str(tmp_path / "refused")]) == 2
    assert "MB with float32 weights, over the size budget" in capsys.readouterr().err
    weights = tmp_path / "weights"
    assert promote_main([*arguments, "--weights-dir", str(weights), "--weights", "int8"]) == 0
    artifact = promoted_model_path(weights)
    card = json.loads(artifact.with_name("model_card.json").read_text())
    assert card["size_bytes"] == artifact.stat().st_size < float_mb * 0.6e6
    promoted = ClassifierModel.load(artifact)
    assert promoted.weights == "int8" and card["weights"]["precision"] == "int8"
    trained = ClassifierModel.load(smoke_run / "checkpoints" / "best.pt")
    trained.store_int8()
    for name, tensor in trained.network.state_dict().items():
        assert torch.equal(promoted.network.state_dict()[name], tensor)
    unchanged = card["weights"]["val_classes_unchanged"]
    assert 0.95 <= unchanged <= 1
    assert f"int8, one scale per output channel, computed in float32 ({unchanged:.2%}" in (
        artifact.with_name("MODEL_CARD.md").read_text()
    )
    assert Predictor.load(weights).version == card["version"]


@pytest.mark.slow
def test_int8_computation_is_calibrated_measured_and_served_as_promoted(
    smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--computation int8`: activation ranges from training images only, every figure on the card
    computed in int8, and the service answers with exactly the logits promotion measured."""
    arguments = [str(smoke_run), "--min-test-accuracy", "0.5", "--unsure-target-accuracy", "0.9",
                 "--domain-floors", "none", "--behaviour-bars", "none", "--computation", "int8"]  # fmt: skip
    assert promote_main([*arguments, "--weights-dir", str(tmp_path / "refused")]) == 2
    assert "--computation int8 needs --weights int8" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
    weights = tmp_path / "weights"
    assert promote_main([*arguments, "--weights-dir", str(weights), "--weights", "int8"]) == 0
    artifact = promoted_model_path(weights)
    card = json.loads(artifact.with_name("model_card.json").read_text())
    promoted = ClassifierModel.load(artifact)
    calibration = len(calibration_images(promoted))  # 2,000 drawn, or the whole training split
    assert card["weights"]["computation"] == "int8" and card["weights"]["calibration_images"] == calibration
    assert f"computed in int8 (ONNX Runtime, uint8 activations in ranges measured on {calibration:,}" in (
        artifact.with_name("MODEL_CARD.md").read_text()
    )
    served = Predictor.load(weights)
    assert promoted.computation == served.metadata()["computation"] == "int8"
    test = evaluation_split(promoted, "test")
    logits = promoted.logits(test.images)
    assert torch.equal(served.model.logits(test.images), logits)
    accuracy = (logits.argmax(dim=1) == test.labels).double().mean().item()
    assert card["domains"][FASHION_MNIST_DOMAIN]["accuracy"] == pytest.approx(accuracy)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-size-mb", "0.1"], r"over the size budget of 0\.10 MB; --weights int8 stores about a"),
        (
            ["--domain-floors", "shoes=0.999,phone:answered=1.0"],
            r"refused, test splits below their floors: phone share answered with a class .*; shoes accuracy",
        ),
        (
            ["--behaviour-bars", "occlusion-lowered=1"],  # some image's confidence stays or rises
            r"refused, validation behaviour misses its bars \(no test split was read\): occlusion-lowered "
            r"0\.\d{4} is under its floor 1\.0000",
        ),
    ],
    ids=["size budget", "photo domain floors", "behaviour bars"],
)
def test_refuses_a_model_over_a_budget_or_under_a_floor_and_writes_nothing(
    smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    weights = tmp_path / "w"
    arguments = [str(smoke_run), "--weights-dir", str(weights), "--min-test-accuracy", "0.5",
                 "--unsure-target-accuracy", "0.9"]  # fmt: skip
    assert promote_main([*arguments, *extra]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not weights.exists()


@pytest.mark.slow
def test_behaviour_bars_are_checked_before_any_test_split_is_read(
    smoke_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A candidate the behaviour tests would fail is refused on validation images: its test read is
    not spent (two candidates were promoted, read their test splits, then failed a behaviour test)."""

    def no_test_read(*arguments: object) -> None:
        raise AssertionError("a test split was read")

    monkeypatch.setattr("release.promote.evaluation_sets", no_test_read)
    arguments = [str(smoke_run), "--weights-dir", str(tmp_path / "w"), "--min-test-accuracy", "0.5",
                 "--unsure-target-accuracy", "0.9", "--behaviour-bars", "occlusion-lowered=1"]  # fmt: skip
    assert promote_main(arguments) == 2
    assert "refused, validation behaviour misses its bars" in capsys.readouterr().err


@pytest.mark.slow
def test_refuses_an_unfinished_run(
    smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unfinished = tmp_path / "unfinished"
    shutil.copytree(smoke_run, unfinished)
    (unfinished / "summary.json").unlink()
    assert promote_main([str(unfinished), "--weights-dir", str(tmp_path / "w")]) == 2
    assert "has no summary.json: the run did not finish" in capsys.readouterr().err


def test_the_shipped_artifact_saves_again_to_the_same_bytes() -> None:
    """Loading and saving changes nothing (formats /1 and /2 kept their bytes when /3 came)."""
    path = promoted_model_path()
    assert ClassifierModel.load(path).artifact_bytes() == path.read_bytes()


def test_shipped_artifact_matches_its_model_card() -> None:
    card = json.loads(promoted_model_path().with_name("model_card.json").read_text())
    assert hashlib.sha256(promoted_model_path().read_bytes()).hexdigest() == card["sha256"]
    assert card["size_bytes"] == promoted_model_path().stat().st_size <= DEFAULT_MAX_SIZE_MB * 1e6
    model = ClassifierModel.load(promoted_model_path())
    assert model.parameter_count == card["parameters"]
    assert model.metadata["metrics"]["test_accuracy"] == card["metrics"]["test_accuracy"]
