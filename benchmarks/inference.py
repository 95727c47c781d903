"""In-process inference of the promoted model, as served (each image averaged with its mirror image
when the model says so, one forward pass of both): single-image latency (p50/p99), batch throughput,
and agreement with the eager model's classes and accuracy on the full Fashion-MNIST test split, for
eager PyTorch, eager with batch-norm folded into the convolutions, TorchScript (traced, optimized for
inference), ONNX Runtime (CPU, float32: what the API serves for a float32 model) and int8
quantizations (ONNX Runtime dynamic; ONNX Runtime static, QDQ, per-channel weights, activation ranges
from the model's own training images and their mirror images, min-max or moving-average; PyTorch
dynamic), measured interleaved in one run (issue 13, point 2). For a model computed in int8, "as
served" is its own int8 graph (from the artifact's activation ranges), and "eager" the float32
computation of the same int8 weights.

    python -m benchmarks.inference [--threads 1] [--single 300] [--batch 256] [--model PATH]

`--model` measures another artifact (or weights folder) than the promoted one, into
`results/inference-<model version>.json`; `results/inference.json` stays the served model's.
"""

import argparse
import hashlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from benchmarks.common import median, percentile, print_table, write_result
from release.evaluate import calibration_images
from text_recognizer.datasets.fashion_mnist import load_fashion_mnist
from text_recognizer.models import ClassifierModel
from text_recognizer.models.onnx_network import OnnxRuntimeNetwork, batch_reader, exported
from text_recognizer.promoted import model_file, promoted_model_path


def timings(function: Callable[[torch.Tensor], torch.Tensor], inputs: list[torch.Tensor]) -> list[float]:
    results = []
    with torch.inference_mode():
        for batch in inputs:
            started = time.perf_counter()
            function(batch)
            results.append((time.perf_counter() - started) * 1000)
    return results


def predicted_classes(
    model: ClassifierModel, function: Callable[[torch.Tensor], torch.Tensor], inputs: list[torch.Tensor]
) -> torch.Tensor:
    with torch.inference_mode():
        return torch.cat([model.calibrated(model.merged(function(batch))).argmax(dim=1) for batch in inputs])


def calibration_inputs(model: ClassifierModel) -> list[torch.Tensor]:
    """Network inputs for static quantization's activation ranges: promotion's calibration images
    (`release.evaluate.calibration_images`), with their mirror images where the model averages with
    them."""
    images = calibration_images(model)
    return [as_served_input(model, images[i : i + 100]) for i in range(0, len(images), 100)]


def as_served_input(model: ClassifierModel, images: torch.Tensor) -> torch.Tensor:
    """The network's input for `images` as `ClassifierModel.logits` runs it (with mirror images under
    mirror averaging)."""
    return model.views(model.network_input(images))


STATIC = {"static": False, "static-average": True}  # int8 static quantizations: moving-average ranges?


def onnx_models(
    network: torch.nn.Module, input_shape: tuple[int, ...], calibration: list[torch.Tensor]
) -> dict[str, bytes]:
    """The network exported to ONNX ("model"), and its int8 quantizations by ONNX Runtime: weights only
    ("dynamic"), and weights and activations with ranges from `calibration` (QDQ): the extremes seen
    ("static"), or each batch's extremes averaged ("static-average", ORT's CalibMovingAverage)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    def reader() -> object:  # one pass: a quantization takes a new reader
        return batch_reader(batch.contiguous().numpy() for batch in calibration)

    with tempfile.TemporaryDirectory(prefix="onnx-") as directory:
        folder = Path(directory)
        model = folder / "model.onnx"
        model.write_bytes(exported(network, input_shape))
        quantize_dynamic(str(model), str(folder / "dynamic.onnx"), weight_type=QuantType.QInt8)
        for name, averaged in STATIC.items():
            quantize_static(str(model), str(folder / f"{name}.onnx"), reader(), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            extra_options={"CalibMovingAverage": averaged})  # fmt: skip
        return {name: (folder / f"{name}.onnx").read_bytes() for name in ("model", "dynamic", *STATIC)}


def onnx_variants(
    network: torch.nn.Module, input_shape: tuple[int, ...], calibration: list[torch.Tensor]
) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    """The folded network exported to ONNX and run by ONNX Runtime (what the API serves), and its int8
    quantizations run the same way."""
    models = onnx_models(network, input_shape, calibration)
    print(f"ONNX sizes: float32 {len(models['model']):,} B, int8 dynamic {len(models['dynamic']):,} B, "
          f"int8 static {len(models['static']):,} B")  # fmt: skip
    threads = torch.get_num_threads()
    return {
        "onnx runtime float32": OnnxRuntimeNetwork(models["model"], threads),
        "int8 dynamic (onnx runtime)": OnnxRuntimeNetwork(models["dynamic"], threads),
        "int8 static (onnx runtime)": OnnxRuntimeNetwork(models["static"], threads),
        "int8 static, averaged ranges (onnx runtime)": OnnxRuntimeNetwork(models["static-average"], threads),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--single", type=int, default=300, help="single-image predictions timed per variant")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--model", type=Path, help="artifact or weights folder (default: the promoted one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = model_file(args.model) if args.model else promoted_model_path()
    model = ClassifierModel.load(path)
    model.network.eval()
    images = load_fashion_mnist().test.images
    single_inputs = [as_served_input(model, images[i : i + 1]) for i in range(args.single)]
    batch_inputs = [
        as_served_input(model, images[i * args.batch : (i + 1) * args.batch]) for i in range(args.batches)
    ]
    with torch.inference_mode():
        traced = torch.jit.optimize_for_inference(torch.jit.trace(model.network, batch_inputs[0]))
        assert torch.allclose(traced(batch_inputs[0]), model.network(batch_inputs[0]), atol=1e-4)
        model.fold_batch_norm()
        folded = model.inference_network
        assert folded is not None
        assert torch.allclose(folded(batch_inputs[0]), model.network(batch_inputs[0]), atol=1e-4)
    variants: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "eager": model.network,
        "eager, batch-norm folded": folded,
        "torchscript": traced,
    }
    variants |= onnx_variants(folded, model.input_shape, calibration_inputs(model))
    if model.computation == "int8":
        model.serve_with_onnx_runtime()
        assert model.inference_network is not None
        variants["int8 as promoted (served)"] = model.inference_network
    variants["int8 dynamic (pytorch)"] = torch.ao.quantization.quantize_dynamic(
        folded, {torch.nn.Linear}, dtype=torch.qint8
    )
    single: dict[str, list[float]] = {name: [] for name in variants}
    batched: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(3):  # interleave, so background load hits both variants alike
        for name, function in variants.items():
            timings(function, single_inputs[:20])  # warm-up
            single[name] += timings(function, single_inputs)
            batched[name] += timings(function, batch_inputs)
    test = load_fashion_mnist().test
    test_inputs = [as_served_input(model, test.images[i : i + 1024]) for i in range(0, len(test), 1024)]
    classes = {name: predicted_classes(model, function, test_inputs) for name, function in variants.items()}
    rows = [
        {
            "variant": name,
            "single_p50_ms": median(single[name]),
            "single_p99_ms": percentile(single[name], 0.99),
            "batch_images_per_s": args.batch / (median(batched[name]) / 1000),
            "agreement_with_eager": (classes[name] == classes["eager"]).double().mean().item(),
            "test_accuracy": (classes[name] == test.labels).double().mean().item(),
        }
        for name in variants
    ]
    served = "each image with its mirror image" if model.test_time_flip else "each image alone"
    print_table(f"{path} inference ({served}), {args.threads} thread(s), batch {args.batch}", rows)
    fastest = min(rows, key=lambda row: row["single_p50_ms"])["variant"]
    print(f"fastest single-image p50: {fastest}")
    # Another model's result is named by its version, as promotion names it: the artifact's sha256[:12].
    name = f"inference-{hashlib.sha256(path.read_bytes()).hexdigest()[:12]}" if args.model else "inference"
    write_result(name, rows, threads=args.threads, batch_size=args.batch, fastest_single=fastest,
                 mirror_averaged=model.test_time_flip, weights=model.weights)  # fmt: skip


if __name__ == "__main__":
    main()
