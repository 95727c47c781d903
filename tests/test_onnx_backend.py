"""The served forward pass by ONNX Runtime (api/onnx_backend.py) against PyTorch's: the same logits on
the fixture model, and the same class for every Fashion-MNIST test image on the shipped model."""

from pathlib import Path

import pytest
import torch

from api.onnx_backend import OnnxRuntimeNetwork, exported
from api.predictor import Predictor
from text_recognizer.datasets.fashion_mnist import read_split
from text_recognizer.datasets.idx import read_idx
from text_recognizer.models import ClassifierModel
from text_recognizer.networks import NETWORKS, build_network
from text_recognizer.promoted import promoted_model_path

from .conftest import FIXTURES_DIR


@pytest.mark.parametrize("mirror", [False, True], ids=["alone", "averaged with the mirror image"])
def test_onnx_runtime_gives_pytorchs_logits_for_any_batch_size(
    fixture_model: Path, tmp_path: Path, mirror: bool
) -> None:
    model = ClassifierModel.load(fixture_model)
    model.test_time_flip = mirror
    model.save(tmp_path / "model.pt")  # no card beside it
    served = Predictor.load(tmp_path / "model.pt")
    folded = Predictor.load(tmp_path / "model.pt", backend="torch")
    assert isinstance(served.model.inference_network, OnnxRuntimeNetwork)
    assert served.metadata()["mirror_averaged"] is served.model.test_time_flip is mirror
    images = read_idx(FIXTURES_DIR / "t10k-images-idx3-ubyte.gz")
    for count in (1, 7, len(images)):
        assert torch.allclose(
            served.model.logits(images[:count]), folded.model.logits(images[:count]), atol=1e-4
        )
    eager = served.model.network.eval()
    with torch.inference_mode():
        logits = eager(served.model.network_input(images))
        if mirror:
            logits = (logits + eager(served.model.network_input(images.flip(-1)))) / 2
    assert torch.allclose(served.model.logits(images), logits / served.model.temperature, atol=1e-4)


@pytest.mark.slow
def test_the_shipped_model_served_by_onnx_runtime_agrees_with_eager_on_every_test_image(
    full_data_dir: Path,
) -> None:
    """Issue 13's bar for a faster backend: at least 99.9% of the eager model's classes (measured: all)."""
    served = Predictor.load(promoted_model_path())
    eager = ClassifierModel.load(promoted_model_path())  # the artifact as saved: PyTorch, not folded
    assert isinstance(served.model.inference_network, OnnxRuntimeNetwork) and eager.inference_network is None
    test = read_split(full_data_dir, "test")
    assert torch.equal(served.model.predict(test.images).class_ids, eager.predict(test.images).class_ids)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_network_exports_without_a_tracer_warning_and_runs_the_same(name: str) -> None:
    """A tracer warning (e.g. a shape fixed at the traced batch size of 1) is an error in the export."""
    network = build_network(name, (1, 28, 28), 11).eval()
    served = OnnxRuntimeNetwork(exported(network, (1, 28, 28)), threads=1)
    batch = torch.randn(5, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(served(batch), network(batch), atol=1e-4)
