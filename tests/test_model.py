"""The classifier model: predictions, evaluation, and an artifact that loads safely and stands alone."""

import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from text_recognizer.atomic import current_umask
from text_recognizer.datasets.fashion_mnist import read_split
from text_recognizer.labels import OUT_OF_SCOPE
from text_recognizer.models import ArtifactError, ClassifierModel
from text_recognizer.models.classifier import (
    ARTIFACT_FORMAT,
    INT8_ARTIFACT_FORMAT,
    INT8_COMPUTE_ARTIFACT_FORMAT,
    MIRROR_ARTIFACT_FORMAT,
    OFFSET_ARTIFACT_FORMAT,
    SEPARATED_VIEW_ARTIFACT_FORMAT,
)
from text_recognizer.models.onnx_network import OnnxRuntimeNetwork
from text_recognizer.models.weight_storage import SCALE_SUFFIX
from text_recognizer.preprocessing import Normalization

from .conftest import FIXTURES_DIR

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


def untrained_model(classes: tuple[str, ...] = CLASSES) -> ClassifierModel:
    torch.manual_seed(0)
    split = read_split(FIXTURES_DIR, "train")
    return ClassifierModel(
        "cnn",
        {"channels": [8, 16], "convs_per_stage": 1, "hidden_size": 32},
        (1, 28, 28),
        classes,
        Normalization.fit(split.images),
        metadata={"data": {"checksums": {"train": "abc"}}, "metrics": {"val_accuracy": 0.5}},
    )


def fit(model: ClassifierModel, epochs: int = 3) -> ClassifierModel:
    split = read_split(FIXTURES_DIR, "train")
    optimizer = torch.optim.Adam(model.network.parameters(), lr=3e-3)
    batches = list(zip(split.images.split(50), split.labels.split(50), strict=True))
    for _ in range(epochs):
        model.fit_epoch(batches, optimizer)
    return model


@pytest.fixture
def fitted_model() -> ClassifierModel:
    """A small CNN trained briefly on the fixture images, so predictions are not all alike."""
    return fit(untrained_model())


def test_fit_epoch_reduces_loss() -> None:
    split = read_split(FIXTURES_DIR, "train")
    model = untrained_model()
    before = model.evaluate(split.images, split.labels)
    after = fit(model).evaluate(split.images, split.labels)
    assert after["loss"] < 0.8 * before["loss"] and after["accuracy"] > before["accuracy"] + 0.3


def test_predict_accepts_single_and_batched_images(fitted_model: ClassifierModel) -> None:
    images = read_split(FIXTURES_DIR, "test").images[:5]
    batch = fitted_model.predict(images)
    assert batch.class_ids.shape == (5,) and batch.probabilities.shape == (5, 10)
    assert torch.allclose(batch.probabilities.sum(dim=1), torch.ones(5))
    assert batch.categories == [CLASSES[i] for i in batch.class_ids.tolist()]
    single = fitted_model.predict(images[0].numpy())
    assert single.class_ids.tolist() == batch.class_ids[:1].tolist()
    assert torch.equal(fitted_model.predict(images.unsqueeze(1)).class_ids, batch.class_ids)


@pytest.mark.parametrize(
    ("network", "args"),
    [("cnn", {"channels": [8, 16], "convs_per_stage": 2}), ("resnet", {"channels": [8, 16]})],
)
def test_folded_batch_norm_predicts_the_same_until_training_resumes(network: str, args: dict) -> None:
    split = read_split(FIXTURES_DIR, "train")
    torch.manual_seed(0)
    model = ClassifierModel(network, args, (1, 28, 28), CLASSES, Normalization.fit(split.images))
    optimizer = torch.optim.SGD(model.network.parameters(), lr=0.05)
    model.fit_epoch([(split.images[:100], split.labels[:100])], optimizer)  # batch-norm stats move
    plain = model.logits(split.images)
    model.fold_batch_norm()
    folded_network = model.inference_network
    assert folded_network is not None
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded_network.modules())
    assert torch.allclose(model.logits(split.images), plain, atol=1e-4)
    model.fit_epoch([(split.images[:100], split.labels[:100])], optimizer)
    assert model.inference_network is None  # stale weights are never served
    assert not torch.allclose(model.logits(split.images), plain, atol=1e-4)


@pytest.mark.parametrize(
    ("images", "error", "message"),
    [
        (torch.zeros(2, 28, 28), TypeError, "must be uint8"),
        (torch.zeros(2, 3, 28, 28, dtype=torch.uint8), ValueError, "grayscale"),
        (torch.zeros(2, 32, 32, dtype=torch.uint8), ValueError, r"expected images of shape \(1, 28, 28\)"),
    ],
)
def test_predict_rejects_wrong_input(
    fitted_model: ClassifierModel, images: torch.Tensor, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        fitted_model.predict(images)


def test_save_load_round_trip_gives_identical_predictions(
    fitted_model: ClassifierModel, tmp_path: Path
) -> None:
    path = tmp_path / "model.pt"
    fitted_model.save(path)
    loaded = ClassifierModel.load(path)
    images = read_split(FIXTURES_DIR, "test").images
    assert torch.equal(loaded.predict(images).probabilities, fitted_model.predict(images).probabilities)
    assert loaded.class_names == CLASSES
    assert loaded.normalization == fitted_model.normalization
    assert loaded.metadata == fitted_model.metadata
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no temporary file left


def test_test_time_flip_averages_each_image_with_its_mirror_and_is_saved(
    fitted_model: ClassifierModel, tmp_path: Path
) -> None:
    images = read_split(FIXTURES_DIR, "test").images
    plain, mirrored = fitted_model.logits(images), fitted_model.logits(images.flip(-1))
    assert not torch.allclose(plain, mirrored, atol=1e-3)  # the network itself tells the two apart
    fitted_model.save(tmp_path / "plain.pt")
    fitted_model.test_time_flip = True
    averaged = fitted_model.logits(images, batch_size=7)  # chunks: each image meets its own mirror
    torch.testing.assert_close(averaged, (plain + mirrored) / 2, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fitted_model.logits(images.flip(-1)), averaged, rtol=1e-4, atol=1e-5)
    fitted_model.save(tmp_path / "flip.pt")
    loaded = ClassifierModel.load(tmp_path / "flip.pt")
    assert loaded.test_time_flip and torch.equal(loaded.logits(images), fitted_model.logits(images))
    assert not ClassifierModel.load(tmp_path / "plain.pt").test_time_flip
    plain = torch.load(tmp_path / "plain.pt", weights_only=True)
    assert "test_time_flip" not in plain["description"]  # artifacts without it keep their bytes
    flip = torch.load(tmp_path / "flip.pt", weights_only=True)
    assert (plain["format"], flip["format"]) == (
        ARTIFACT_FORMAT,
        MIRROR_ARTIFACT_FORMAT,
    )  # older code refuses it
    for artifact, wrong in ((plain, MIRROR_ARTIFACT_FORMAT), (flip, ARTIFACT_FORMAT)):
        with pytest.raises(ArtifactError, match="test_time_flip"):
            ClassifierModel.from_artifact({**artifact, "format": wrong})


@pytest.mark.parametrize("computation", ["float32", "int8"])
def test_an_out_of_scope_offset_lowers_that_logit_and_is_saved(computation: str, tmp_path: Path) -> None:
    """The offset comes off the out-of-scope logit after the temperature, in either computation. An
    artifact with one names every choice in a format older code refuses; without one, the bytes stay."""
    model = fit(untrained_model((*CLASSES, OUT_OF_SCOPE)))
    images = read_split(FIXTURES_DIR, "test").images
    if computation == "int8":
        model.store_int8()
        model.compute_int8(read_split(FIXTURES_DIR, "train").images)
    model.temperature, model.test_time_flip = 0.5, True
    model.save(tmp_path / "none.pt")
    before = model.logits(images)
    model.out_of_scope_offset = 1.5
    expected = before.clone()
    expected[:, len(CLASSES)] -= 1.5
    assert torch.equal(model.logits(images), expected)
    model.save(tmp_path / "offset.pt")
    loaded = ClassifierModel.load(tmp_path / "offset.pt")
    assert loaded.out_of_scope_offset == 1.5 and torch.equal(loaded.logits(images), expected)
    assert (loaded.computation, loaded.weights, loaded.test_time_flip) == (
        computation,
        "int8" if computation == "int8" else "float32",
        True,
    )
    loaded.save(tmp_path / "again.pt")
    assert (tmp_path / "again.pt").read_bytes() == (tmp_path / "offset.pt").read_bytes()
    model.out_of_scope_offset = 0.0
    model.save(tmp_path / "none-again.pt")
    assert (tmp_path / "none-again.pt").read_bytes() == (tmp_path / "none.pt").read_bytes()
    artifact = torch.load(tmp_path / "offset.pt", weights_only=True)
    assert artifact["format"] == OFFSET_ARTIFACT_FORMAT  # code from before refuses it
    description = json.loads(artifact["description"])
    broken = [
        ({"out_of_scope_offset": "1.5"}, "out_of_scope_offset must be a number other than 0, got '1.5'"),
        ({"out_of_scope_offset": True}, "out_of_scope_offset must be a number other than 0, got True"),
        ({"out_of_scope_offset": 0}, "out_of_scope_offset must be a number other than 0, got 0"),
        ({"out_of_scope_offset": -1}, "must be a finite number >= 0, got -1"),
        ({"out_of_scope_offset": float("nan")}, "must be a finite number >= 0, got nan"),
        ({"test_time_flip": "yes"}, "test_time_flip must be true or false, got 'yes'"),
        ({"class_names": [*CLASSES, "Other"]}, "an out-of-scope offset needs an 'Out of scope' class"),
    ]
    for change, message in broken:
        with pytest.raises(ArtifactError, match=re.escape(message)):
            ClassifierModel.from_artifact({**artifact, "description": json.dumps(description | change)})
    for key in ("out_of_scope_offset", "weights", "computation", "test_time_flip"):
        unnamed = {k: v for k, v in description.items() if k != key}
        with pytest.raises(ArtifactError, match=key):
            ClassifierModel.from_artifact({**artifact, "description": json.dumps(unnamed)})


def test_a_separated_view_is_averaged_in_predicted_with_and_saved(tmp_path: Path) -> None:
    """Under `separated_view_side`, each image's logits are averaged with its separated view's (an image
    that has none is its own, and keeps its logits exactly); uploads of one or two views are classified so
    in one forward pass; without it the second view is ignored. The artifact names every choice in a
    format older code refuses, with or without an out-of-scope offset."""
    model = fit(untrained_model((*CLASSES, OUT_OF_SCOPE)))
    images = read_split(FIXTURES_DIR, "test").images[:20]
    others = images.flip(1)  # upside down: stands in for separated views, unlike the images
    model.temperature, model.test_time_flip = 0.5, True
    alone = model.logits(images)
    assert torch.equal(model.logits(images, separated=others), alone)  # not chosen: not used
    uploads = [torch.stack([image, other]).numpy() for image, other in zip(images, others, strict=True)]
    assert torch.equal(model.predict_views(uploads).probabilities, torch.softmax(alone, dim=1))
    model.separated_view_side = 64
    averaged = model.logits(images, separated=others)
    expected = (model.network_logits(images) + model.network_logits(others)) / 2 / 0.5
    assert torch.allclose(averaged, expected, atol=1e-6) and not torch.allclose(averaged, alone, atol=0.1)
    assert torch.equal(model.logits(images, separated=images), alone)
    mixed = [views if i % 2 else views[:1] for i, views in enumerate(uploads)]
    rows = torch.stack([averaged[i] if i % 2 else alone[i] for i in range(len(mixed))])
    passes, network_logits = [], model.network_logits
    model.network_logits = lambda images: passes.append(len(images)) or network_logits(images)  # type: ignore[method-assign]
    assert torch.allclose(model.predict_views(mixed).probabilities, torch.softmax(rows, dim=1), atol=1e-6)
    assert passes == [30]  # one pass: 10 uploads of one view, 10 of two
    del model.network_logits
    model.save(tmp_path / "separated.pt")
    loaded = ClassifierModel.load(tmp_path / "separated.pt")
    assert (loaded.separated_view_side, loaded.out_of_scope_offset, loaded.test_time_flip) == (64, 0.0, True)
    assert torch.equal(loaded.logits(images, separated=others), averaged)
    artifact = torch.load(tmp_path / "separated.pt", weights_only=True)
    assert artifact["format"] == SEPARATED_VIEW_ARTIFACT_FORMAT  # code from before refuses it
    description = json.loads(artifact["description"])
    for side in (0, -64, 15, 113, 10**9, True, "64", 64.0):
        with pytest.raises(ArtifactError, match="separated_view_side must be a whole number from 16 to 112"):
            changed = description | {"separated_view_side": side}
            ClassifierModel.from_artifact({**artifact, "description": json.dumps(changed)})
    for side in (False, 0.0, 15, 113):  # nor as a model is made
        with pytest.raises(ValueError, match="separated_view_side"):
            ClassifierModel(
                "cnn", {}, (1, 28, 28), CLASSES, Normalization(0.3, 0.3), separated_view_side=side
            )
    older = {**artifact, "format": OFFSET_ARTIFACT_FORMAT}  # format 5 never names one: refused, not ignored
    with pytest.raises(ArtifactError, match="does not go with a separated_view_side"):
        ClassifierModel.from_artifact(
            {**older, "description": json.dumps(description | {"out_of_scope_offset": 1.5})}
        )
    for key in ("separated_view_side", "out_of_scope_offset", "test_time_flip"):
        unnamed = {k: v for k, v in description.items() if k != key}
        with pytest.raises(ArtifactError, match=key):
            ClassifierModel.from_artifact({**artifact, "description": json.dumps(unnamed)})
    with_offset = description | {"out_of_scope_offset": 1.5}
    assert (
        ClassifierModel.from_artifact(
            {**artifact, "description": json.dumps(with_offset)}
        ).out_of_scope_offset
        == 1.5
    )
    model.separated_view_side = 0
    model.save(tmp_path / "one-view.pt")
    assert torch.load(tmp_path / "one-view.pt", weights_only=True)["format"] == MIRROR_ARTIFACT_FORMAT


def test_int8_weights_are_what_is_stored_served_and_loaded(
    fitted_model: ClassifierModel, tmp_path: Path
) -> None:
    """`store_int8`: the file keeps each conv/linear weight in one byte (plus a scale per output channel),
    and the model in memory predicts with exactly the stored weights, before and after loading."""
    images = read_split(FIXTURES_DIR, "test").images
    float_path, int8_path = tmp_path / "float.pt", tmp_path / "int8.pt"
    fitted_model.save(float_path)
    before = fitted_model.logits(images)
    fitted_model.test_time_flip = True
    fitted_model.store_int8()
    after = fitted_model.logits(images)
    assert not torch.equal(after, before)  # the weights did change (to their int8 values)
    fitted_model.save(int8_path)
    loaded = ClassifierModel.load(int8_path)
    assert loaded.weights == "int8" and loaded.test_time_flip
    assert torch.equal(loaded.logits(images), after)
    loaded.save(tmp_path / "again.pt")  # stored again, the same integers and scales: the same file
    assert (tmp_path / "again.pt").read_bytes() == int8_path.read_bytes()
    artifact = torch.load(int8_path, weights_only=True)
    assert artifact["format"] == INT8_ARTIFACT_FORMAT  # code from before refuses it
    state = artifact["state_dict"]
    weights = [key for key, value in state.items() if value.dtype == torch.int8]
    assert weights and all(state[key].dim() >= 2 and key + SCALE_SUFFIX in state for key in weights)
    assert int8_path.stat().st_size < float_path.stat().st_size / 2
    for wrong in (ARTIFACT_FORMAT, MIRROR_ARTIFACT_FORMAT):
        with pytest.raises(ArtifactError, match="does not go with weights 'int8'"):
            ClassifierModel.from_artifact({**artifact, "format": wrong})
    unscaled = {key: value for key, value in state.items() if key != weights[0] + SCALE_SUFFIX}
    with pytest.raises(ArtifactError, match=f"int8 weight '{weights[0]}' has no per-channel scales"):
        ClassifierModel.from_artifact({**artifact, "state_dict": unscaled})


def test_int8_computation_is_what_is_stored_served_and_loaded(
    fitted_model: ClassifierModel, tmp_path: Path
) -> None:
    """`compute_int8`: the artifact keeps each activation's range, and a loaded model rebuilds the same
    int8 graph from them, so it gives exactly the logits that were measured before saving."""
    images = read_split(FIXTURES_DIR, "test").images
    with pytest.raises(ValueError, match="needs int8 weights: store_int8 first"):
        fitted_model.compute_int8(images)
    fitted_model.store_int8()
    float_logits = fitted_model.logits(images)
    fitted_model.compute_int8(read_split(FIXTURES_DIR, "train").images)
    assert fitted_model.computation == "int8"
    int8_logits = fitted_model.logits(images)
    assert not torch.equal(int8_logits, float_logits)  # computed otherwise, and yet close to it
    assert (int8_logits.argmax(dim=1) == float_logits.argmax(dim=1)).double().mean() >= 0.9
    path = tmp_path / "int8.pt"
    fitted_model.save(path)
    loaded = ClassifierModel.load(path)
    assert loaded.computation == "int8" and loaded.activation_ranges == fitted_model.activation_ranges
    assert torch.equal(loaded.logits(images), int8_logits)
    assert isinstance(loaded.inference_network, OnnxRuntimeNetwork)
    loaded.fold_batch_norm()  # whatever replaced the int8 graph, predictions are computed in int8 again
    assert torch.equal(loaded.logits(images), int8_logits)
    loaded.save(tmp_path / "again.pt")
    assert (tmp_path / "again.pt").read_bytes() == path.read_bytes()
    with pytest.raises(ValueError, match="computed in int8 is not trained further"):
        loaded.fit_epoch([], torch.optim.SGD(loaded.network.parameters(), lr=0.1))
    artifact = torch.load(path, weights_only=True)
    assert artifact["format"] == INT8_COMPUTE_ARTIFACT_FORMAT  # code from before refuses it
    with pytest.raises(ArtifactError, match="does not go with computation 'int8'"):
        ClassifierModel.from_artifact({**artifact, "format": INT8_ARTIFACT_FORMAT})
    ranges = loaded.activation_ranges or {}
    name, (low, high) = next(iter(ranges.items()))
    broken = [
        ({name: [high, low]}, f"activation range of '{re.escape(name)}' is"),
        ({}, "must map tensor names"),
        (ranges | {name: [0.0, 1e39]}, r"is \[0.0, 1e\+39\], not \[lowest, highest\] in float32"),
        (ranges | {name: [-3.4e38, 3.4e38]}, "in float32"),  # each finite, but not their width
        (ranges | {name: [0, 1]}, "in float32"),
        (ranges | {name: [float("nan"), 1.0]}, "in float32"),
        (
            {k: v for k, v in ranges.items() if k != name},
            rf"the network's graph: missing \['{re.escape(name)}'\]",
        ),
        (ranges | {"bogus": [0.0, 1.0]}, r"unknown \['bogus'\]"),
    ]
    for wrong, message in broken:
        description = json.loads(artifact["description"]) | {"activation_ranges": wrong}
        with pytest.raises(ArtifactError, match=message):
            ClassifierModel.from_artifact({**artifact, "description": json.dumps(description)})
    other = json.loads(artifact["description"]) | {"int8_graph_sha256": "0" * 64}
    with pytest.raises(ArtifactError, match="is not the one this model was promoted with"):
        ClassifierModel.from_artifact({**artifact, "description": json.dumps(other)})
    other = json.loads(artifact["description"]) | {"computation": "int4"}
    with pytest.raises(ArtifactError, match="computation 'int4' is not one of float32, int8"):
        ClassifierModel.from_artifact({**artifact, "description": json.dumps(other)})


def test_artifact_predicts_without_training_code_config_or_data(
    fitted_model: ClassifierModel, tmp_path: Path
) -> None:
    """Load in a fresh interpreter where `training` cannot be imported and no data or config exists."""
    path = tmp_path / "model.pt"
    fitted_model.save(path)
    expected = fitted_model.predict(read_split(FIXTURES_DIR, "test").images[:8]).categories
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["training"] = None  # any import of the training package now fails
        import torch
        from text_recognizer.datasets.idx import read_idx
        from text_recognizer.models import ClassifierModel
        model = ClassifierModel.load({str(path)!r})
        images = read_idx(__import__("pathlib").Path({str(FIXTURES_DIR / "t10k-images-idx3-ubyte.gz")!r}))[:8]
        print("|".join(model.predict(images).categories))
        """
    )
    env = {**os.environ, "TEXT_RECOGNIZER_DATA_DIR": str(tmp_path / "no-data")}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().split("|") == expected


class Exploit:
    """Unpickled, it makes a folder: the proof that loading ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def test_loading_refuses_pickled_code(tmp_path: Path) -> None:
    path, marker = tmp_path / "evil.pt", tmp_path / "code-ran"
    torch.save({"format": "text_recognizer.classifier/1", "payload": Exploit(marker)}, path)
    with pytest.raises(ArtifactError, match="not a loadable checkpoint"):
        ClassifierModel.load(path)
    assert not marker.exists(), "the pickled payload ran"
    torch.load(path, weights_only=False)  # the exploit works where pickles are trusted
    assert marker.is_dir()


def test_loading_garbage_or_foreign_checkpoints_is_a_clear_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ArtifactError, match="not a loadable checkpoint"):
        ClassifierModel.load(garbage)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(ArtifactError, match="unknown artifact format None"):
        ClassifierModel.load(foreign)


def test_interrupted_save_keeps_the_previous_artifact(
    fitted_model: ClassifierModel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "model.pt"
    fitted_model.save(path)
    before = path.read_bytes()

    class SaveInterruptedError(Exception):
        pass

    def failing_save(payload: object, handle: object) -> None:
        handle.write(b"half a checkpoint")  # type: ignore[attr-defined]
        raise SaveInterruptedError

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(SaveInterruptedError):
        fitted_model.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())
