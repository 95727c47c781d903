"""Promotion of a run to the served artifact, and the consistency of the artifact shipped in the repo."""

import argparse
import hashlib
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from api.predictor import Predictor
from text_recognizer.models import ClassifierModel
from text_recognizer.models.classifier import ArtifactError
from text_recognizer.paths import PROMOTED_MODEL_PATH
from training.promote import DEFAULT_MAX_SIZE_MB, DEFAULT_MIN_TEST_ACCURACY, floor_problems, parse_floors
from training.promote import main as promote_main

from .support.smoke_training import train_smoke


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, full_data_dir: Path) -> Path:
    return train_smoke(tmp_path_factory.mktemp("runs"))[0]


@pytest.mark.slow
def test_promotes_best_checkpoint_with_a_model_card(smoke_run: Path, tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    floors = ["--domain-floors", "catalogue=0"]  # the photo domains are evaluated; a smoke model has no floor
    smoke = ["--min-test-accuracy", "0.5", "--unsure-target-accuracy", "0.9"]  # a 1-epoch model's reach
    assert promote_main([str(smoke_run), "--weights-dir", str(weights), *smoke, *floors]) == 0
    best = smoke_run / "checkpoints" / "best.pt"
    promoted, trained = ClassifierModel.load(weights / "model.pt"), ClassifierModel.load(best)
    for name, tensor in trained.network.state_dict().items():
        assert torch.equal(promoted.network.state_dict()[name], tensor)
    assert trained.temperature == 1.0 and promoted.temperature != 1.0
    card = json.loads((weights / "model_card.json").read_text())
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert card["sha256"] == hashlib.sha256((weights / "model.pt").read_bytes()).hexdigest()
    calibration = card["calibration"]
    assert (
        calibration["temperature"] == promoted.temperature and calibration["chosen_on"] == "validation split"
    )
    assert calibration["val_ece_after"] < calibration["val_ece_before"]
    assert card["metrics"]["test_accuracy"] == summary["test"]["accuracy"]
    assert card["network"]["name"] == "cnn" and card["parameters"] == summary["parameters"]
    assert card["data"]["checksums"] == summary["data"]["checksums"]
    markdown = (weights / "MODEL_CARD.md").read_text()
    assert card["data"]["version"] == "v1"
    assert f"| data version | v1 (sha256 `{card['data']['version_hash']}`)" in markdown
    assert card["git_commit"] == summary["environment"]["git_commit"] and card["config"]["name"] == "smoke"
    assert card["version"] in markdown
    threshold = card["confidence_threshold"]
    assert 0 < threshold["value"] <= 1 and threshold["chosen_on"] == "validation split"
    assert threshold["val_accuracy_when_sure"] >= threshold["target_accuracy"] == 0.9
    assert 0.5 <= threshold["val_coverage"] < 1, "a threshold that answers most images, not all"
    assert Predictor.load(weights / "model.pt").version == card["version"]
    assert list(card["domains"]) == ["fashion_mnist", "catalogue", "shoes", "phone", "out-of-scope"]
    assert card["domains"]["fashion_mnist"]["accuracy"] == card["metrics"]["test_accuracy"]
    assert "| phone |" in markdown and card["domain_floors"] == {"catalogue": 0.0}


def test_the_service_refuses_a_card_that_describes_other_weights(tmp_path: Path) -> None:
    """A promotion interrupted between the weights and the card left the old card beside new weights:
    the service took another model's version and threshold. Now it refuses to load."""
    shutil.copytree(PROMOTED_MODEL_PATH.parent, tmp_path / "weights")
    card_path = tmp_path / "weights" / "model_card.json"
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "sha256": "0" * 64}))
    with pytest.raises(ArtifactError, match=r"describes weights with sha256 0{64}, but .*model\.pt has"):
        Predictor.load(tmp_path / "weights" / "model.pt")
    card_path.write_text(json.dumps(card))
    assert Predictor.load(tmp_path / "weights" / "model.pt").version == card["version"]


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
    results = {"phone": {"accuracy": 0.61, "answered_with_a_class": 0.5}}
    assert floor_problems(results, {"phone": 0.6, "phone:answered": 0.7, "shoes": 0.9}) == [
        "phone share answered with a class 0.5000 is below its floor 0.7000",
        "shoes has no test photos to hold to its floor 0.9000",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-size-mb", "0.1"], r"over the size budget of 0\.10 MB"),
        (
            ["--domain-floors", "shoes=0.999,phone:answered=1.0"],
            r"refused, test splits below their floors: phone share answered with a class .*; shoes accuracy",
        ),
    ],
    ids=["size budget", "photo domain floors"],
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
def test_refuses_an_unfinished_run(
    smoke_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unfinished = tmp_path / "unfinished"
    shutil.copytree(smoke_run, unfinished)
    (unfinished / "summary.json").unlink()
    assert promote_main([str(unfinished), "--weights-dir", str(tmp_path / "w")]) == 2
    assert "has no summary.json: the run did not finish" in capsys.readouterr().err


def test_shipped_artifact_matches_its_model_card() -> None:
    card = json.loads(PROMOTED_MODEL_PATH.with_name("model_card.json").read_text())
    assert hashlib.sha256(PROMOTED_MODEL_PATH.read_bytes()).hexdigest() == card["sha256"]
    assert card["size_bytes"] == PROMOTED_MODEL_PATH.stat().st_size <= DEFAULT_MAX_SIZE_MB * 1e6
    assert card["metrics"]["test_accuracy"] >= DEFAULT_MIN_TEST_ACCURACY
    model = ClassifierModel.load(PROMOTED_MODEL_PATH)
    assert model.parameter_count == card["parameters"]
    assert model.metadata["metrics"]["test_accuracy"] == card["metrics"]["test_accuracy"]
