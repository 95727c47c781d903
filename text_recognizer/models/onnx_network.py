"""Networks run by ONNX Runtime on the CPU: in float32 as exported, or computed in int8.

Float32 (what the service runs for a float32 model), measured side by side (benchmarks/inference.py,
one thread): an image and its mirror image 0.43 ms against 0.98 ms for the batch-norm-folded PyTorch
network, every Fashion-MNIST test image given the same class.

Int8 computation (static, QDQ: per-channel int8 weights, uint8 activations): a network four times the
shipped one's size runs in about its time (0.46 against 1.33 ms float32 for 32-64-128 channels). The
quantized graph is not stored: the artifact keeps its int8 weights and each activation's calibrated
range, and `int8_graph` rebuilds the same graph from them whenever the model is loaded.
"""

import io
import logging
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from torch import nn
from torch.jit._trace import TracerWarning

ActivationRanges = dict[str, list[float]]  # tensor name in the exported graph -> [lowest, highest]


def exported(network: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """`network` (in eval mode) as an ONNX model taking any batch size: input "input", output "logits"."""
    model = io.BytesIO()
    # The TorchScript-based exporter: deprecated in favour of the dynamo one (which needs onnxscript
    # and more time), and exact for these networks (tests/test_onnx_backend.py).
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)  # the exporter's own deprecation
        warnings.simplefilter("error", TracerWarning)  # e.g. a shape fixed at the traced batch size
        torch.onnx.export(
            network,
            (torch.zeros(1, *input_shape),),
            model,  # type: ignore[arg-type]  # a file object works, as documented
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            dynamo=False,
        )
    return model.getvalue()


def batch_reader(batches: Iterable[np.ndarray]) -> Any:
    """ONNX Runtime's calibration data reader over `batches` of network inputs (one pass)."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch}

    return Reader()


@contextmanager
def saved(model: bytes) -> Iterator[Path]:
    """`model` in a temporary file (ONNX Runtime's quantization tools take paths)."""
    with tempfile.TemporaryDirectory(prefix="onnx-") as directory:
        path = Path(directory) / "model.onnx"
        path.write_bytes(model)
        yield path


def activation_ranges(model: bytes, batches: Iterable[np.ndarray]) -> ActivationRanges:
    """Every activation's range over `batches` of network inputs (float32 NCHW) for `model` (from
    `exported`), by ONNX Runtime's moving-average min-max calibration: each batch's extremes averaged
    over batches, as good as the plain extremes on validation and less swayed by one odd image."""
    from onnxruntime.quantization import create_calibrator

    with saved(model) as path:
        calibrator = create_calibrator(
            path,
            augmented_model_path=path.with_name("augmented.onnx"),
            extra_options={"moving_average": True},
        )
        calibrator.collect_data(batch_reader(batches))
        ranges = calibrator.compute_data()
    return {name: [data.lowest.item(), data.highest.item()] for name, data in sorted(ranges.items())}


def int8_graph(model: bytes, ranges: ActivationRanges, input_shape: tuple[int, ...]) -> bytes:
    """`model` (from `exported`, input of `input_shape` per image) computed in int8: weights per output
    channel (symmetric int8, quantized again from the exported float weights), activations per tensor
    (uint8) in exactly `ranges`. ONNX Runtime insists on a calibration pass: it sees one zero image, and
    `ranges` must name every tensor that pass would measure, so that none of its ranges is used
    (ValueError otherwise)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import MinMaxCalibrater
    from onnxruntime.quantization.quant_utils import load_model_with_shape_infer

    overrides = {
        name: [{"rmin": np.float32(lowest), "rmax": np.float32(highest)}]
        for name, (lowest, highest) in ranges.items()
    }
    one_zero_image = batch_reader([np.zeros((1, *input_shape), dtype=np.float32)])
    with saved(model) as source:
        measured, _ = MinMaxCalibrater(source).select_tensors_to_calibrate(
            load_model_with_shape_infer(source)
        )
        if set(ranges) != measured:
            missing, unknown = sorted(measured - set(ranges)), sorted(set(ranges) - measured)
            raise ValueError(f"activation ranges do not match the network's graph: missing {missing[:5]}, "
                             f"unknown {unknown[:5]} (exported by another torch version?)")  # fmt: skip
        target = source.with_name("int8.onnx")
        advice = QuietAdvice()  # ORT's advice to pre-process the model first: done, by exporting it folded
        logging.getLogger().addFilter(advice)
        try:
            quantize_static(source, target, one_zero_image, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            extra_options={"TensorQuantOverrides": overrides})  # fmt: skip
        finally:
            logging.getLogger().removeFilter(advice)
        return target.read_bytes()


class QuietAdvice(logging.Filter):
    """Drops ONNX Runtime's quantizer's advice to pre-process a model first (nothing else)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from_quantizer = "onnxruntime" in record.pathname and "quantization" in record.pathname
        return not (from_quantizer and "pre-processing" in record.getMessage())


class OnnxRuntimeNetwork(nn.Module):
    """An ONNX model (from `exported` or `int8_graph`) run by ONNX Runtime on the CPU: the network's
    inputs and logits."""

    def __init__(self, model: bytes, threads: int) -> None:
        super().__init__()
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = threads
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.detach().to("cpu", torch.float32).contiguous()  # NCHW, as exported
        (logits,) = self.session.run(None, {"input": batch.numpy()})
        return torch.from_numpy(logits)
