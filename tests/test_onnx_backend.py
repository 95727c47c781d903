"""The served forward pass by ONNX Runtime (text_recognizer/models/onnx_network.py) against PyTorch's:
the same logits on the fixture model, and the same class for every Fashion-MNIST test image on the
shipped model; int8 computation rebuilt from stored ranges as ONNX Runtime calibrates it."""

from pathlib import Path

import pytest
import torch

from api.predictor import Predictor
from text_recognizer.datasets.fashion_mnist import read_split
from text_recognizer.datasets.idx import read_idx
from text_recognizer.models import ArtifactError, ClassifierModel
from text_recognizer.models.onnx_network import OnnxRuntimeNetwork, activation_ranges, exported, int8_graph
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
def test_the_shipped_model_is_served_as_promoted_and_close_to_its_float32_computation(
    full_data_dir: Path,
) -> None:
    """The service's graph gives the logits promotion measured. Computed in int8, the shipped network
    keeps the class that the float32 computation of the same weights gives on at least 99.8% of the
    Fashion-MNIST test images (measured: 99.85%, 15 images differ; issue 13's 99.9% bar is for a
    faster backend of the same model, and every figure of this one was measured in int8); a float32
    model keeps every class."""
    served = Predictor.load(promoted_model_path())
    promoted = ClassifierModel.load(promoted_model_path())
    assert isinstance(served.model.inference_network, OnnxRuntimeNetwork)
    test = read_split(full_data_dir, "test")
    classes = served.model.predict(test.images).class_ids
    assert torch.allclose(served.model.logits(test.images), promoted.logits(test.images), atol=1e-4)
    float32 = ClassifierModel.load(promoted_model_path())
    float32.activation_ranges = None  # the same weights, computed in float32 by PyTorch
    agreement = (float32.predict(test.images).class_ids == classes).double().mean().item()
    assert agreement >= (0.998 if promoted.computation == "int8" else 1.0)


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_network_exports_without_a_tracer_warning_and_runs_the_same(name: str) -> None:
    """A tracer warning (e.g. a shape fixed at the traced batch size of 1) is an error in the export."""
    network = build_network(name, (1, 28, 28), 11).eval()
    served = OnnxRuntimeNetwork(exported(network, (1, 28, 28)), threads=1)
    batch = torch.randn(5, 1, 28, 28)
    with torch.inference_mode():
        assert torch.allclose(served(batch), network(batch), atol=1e-4)


def test_the_int8_graph_rebuilt_from_stored_ranges_is_the_one_onnx_runtime_calibrates(
    fixture_model: Path, tmp_path: Path
) -> None:
    """What the artifact keeps (the ranges) decides the whole graph: byte for byte the graph of
    ONNX Runtime's own static quantization calibrated on the same images (moving-average min-max)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    model = ClassifierModel.load(fixture_model)
    model.store_int8()
    graph = model.float_graph()
    inputs = model.network_input(read_idx(FIXTURES_DIR / "t10k-images-idx3-ubyte.gz"))
    batches = [inputs[i : i + 50].contiguous().numpy() for i in range(0, len(inputs), 50)]

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict[str, object] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    (tmp_path / "model.onnx").write_bytes(graph)
    quantize_static(tmp_path / "model.onnx", tmp_path / "int8.onnx", Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    extra_options={"CalibMovingAverage": True})  # fmt: skip
    ranges = activation_ranges(graph, iter(batches))
    assert int8_graph(graph, ranges) == (tmp_path / "int8.onnx").read_bytes()
    shifted = {name: [low, high * 2] for name, (low, high) in ranges.items()}
    assert int8_graph(graph, shifted) != int8_graph(graph, ranges)  # the ranges are used


def test_a_model_computed_in_int8_is_served_in_int8_by_onnx_runtime_only(
    fixture_model: Path, tmp_path: Path
) -> None:
    model = ClassifierModel.load(fixture_model)
    model.store_int8()
    model.compute_int8(read_split(FIXTURES_DIR, "train").images)
    model.save(tmp_path / "model.pt")
    served = Predictor.load(tmp_path / "model.pt")
    assert served.metadata()["computation"] == "int8" and served.metadata()["weights"] == "int8"
    images = read_idx(FIXTURES_DIR / "t10k-images-idx3-ubyte.gz")
    assert torch.equal(served.model.logits(images), model.logits(images))
    with pytest.raises(ArtifactError, match="computes in int8, which only the onnxruntime backend runs"):
        Predictor.load(tmp_path / "model.pt", backend="torch")
