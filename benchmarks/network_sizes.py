"""What a wider ResNet costs before anyone trains it: parameters, the artifact's bytes against the 1 MB
budget (float32, and int8 as ONNX Runtime's static quantization stores it), a training step's time, and
one image's forward pass in ONNX Runtime (float32 and int8). The weights are freshly initialized and the
int8 ranges calibrated on real training images: sizes and speeds do not depend on what was learned, and
accuracy is for a training run to say.

Found with it: on this CPU the widths matter more than the parameter count. A ResNet of 18, 36 and 72
channels (221k parameters) took 2.2x the training step of 16, 32 and 64 (175k), while 16, 32 and 80 (243k)
took the same (probably the convolution kernels' blocked layouts: widths off their block size take a
slower path). A 40-epoch run on the former was stopped after 5 epochs of 190 s (85 s is usual).

    python -m benchmarks.network_sizes [--channels 16,32,64 16,32,78 ...] [--steps 10] [--single 300]
"""

import argparse
import io
import time
from typing import Any

import torch

from benchmarks.common import median, print_table, write_result
from benchmarks.inference import onnx_models, timings
from text_recognizer.datasets.fashion_mnist import load_fashion_mnist
from text_recognizer.models import ClassifierModel
from text_recognizer.models.onnx_network import OnnxRuntimeNetwork

BUDGET_BYTES = 1_000_000
CANDIDATES = ("16,32,64", "16,32,78", "16,32,80", "16,48,64", "18,36,72", "24,48,96", "32,64,128")


def train_step_ms(model: ClassifierModel, images: torch.Tensor, labels: torch.Tensor, steps: int) -> float:
    """Median time of one SGD step on a batch (forward, backward, update), with the training threads."""
    network = model.network.train()
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.9)
    times = []
    for step in range(steps + 3):  # three warm up
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(network(model.network_input(images)), labels).backward()
        optimizer.step()
        if step >= 3:
            times.append((time.perf_counter() - started) * 1000)
    return median(times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--channels", nargs="+", default=list(CANDIDATES), help="stage widths, e.g. 16,32,78")
    parser.add_argument("--steps", type=int, default=10, help="training steps timed (batch 128, 2 threads)")
    parser.add_argument("--single", type=int, default=300, help="single-image forward passes timed")
    args = parser.parse_args()
    data = load_fashion_mnist()
    images, labels = data.train.images[:128], data.train.labels[:128]
    calibration_images = data.train.images[:1000]
    singles = data.test.images[: args.single]
    rows: list[dict[str, Any]] = []
    for spec in args.channels:
        channels = [int(width) for width in spec.split(",")]
        torch.manual_seed(0)
        model = ClassifierModel("resnet", {"channels": channels, "blocks_per_stage": 2},
                                data.input_shape, data.class_names, data.normalization)  # fmt: skip
        artifact = io.BytesIO()
        torch.save(model.artifact(), artifact)
        torch.set_num_threads(2)
        step_ms = train_step_ms(model, images, labels, args.steps)
        torch.set_num_threads(1)  # serving's setting
        model.network.eval()
        model.fold_batch_norm()
        folded = model.inference_network
        assert folded is not None
        calibration = [model.network_input(calibration_images[i : i + 100]) for i in range(0, 1000, 100)]
        onnx = onnx_models(folded, model.input_shape, calibration)
        inputs = [model.network_input(singles[i : i + 1]) for i in range(len(singles))]
        forward = {name: OnnxRuntimeNetwork(onnx[name], 1) for name in ("model", "static")}
        single: dict[str, list[float]] = {name: [] for name in forward}
        for _ in range(3):  # interleaved
            for name, network in forward.items():
                timings(network, inputs[:20])
                single[name] += timings(network, inputs)
        rows.append({
            "channels": spec,
            "parameters": model.parameter_count,
            "artifact_bytes": len(artifact.getvalue()),
            "fits_1MB_float32": len(artifact.getvalue()) <= BUDGET_BYTES,
            "int8_static_onnx_bytes": len(onnx["static"]),
            "fits_1MB_int8": len(onnx["static"]) <= BUDGET_BYTES,
            "train_step_ms": step_ms,
            "forward_float32_p50_ms": median(single["model"]),
            "forward_int8_p50_ms": median(single["static"]),
        })  # fmt: skip
    print_table("ResNet widths (2 blocks a stage): size against the 1 MB budget, and speed", rows)
    write_result("network_sizes", rows, budget_bytes=BUDGET_BYTES)


if __name__ == "__main__":
    main()
