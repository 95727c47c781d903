"""In-process inference of the promoted model: single-image latency (p50/p99) and batch throughput,
eager PyTorch, eager with batch-norm folded into the convolutions (what the API serves) and
TorchScript (traced, optimized for inference), measured interleaved in one run.

    python -m benchmarks.inference [--threads 1] [--single 300] [--batch 256]
"""

import argparse
import time
from collections.abc import Callable

import torch

from benchmarks.common import median, percentile, print_table, write_result
from text_recognizer.datasets.fashion_mnist import load_fashion_mnist
from text_recognizer.models import ClassifierModel
from text_recognizer.promoted import promoted_model_path


def timings(function: Callable[[torch.Tensor], torch.Tensor], inputs: list[torch.Tensor]) -> list[float]:
    results = []
    with torch.inference_mode():
        for batch in inputs:
            started = time.perf_counter()
            function(batch)
            results.append((time.perf_counter() - started) * 1000)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--single", type=int, default=300, help="single-image predictions timed per variant")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batches", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = ClassifierModel.load(promoted_model_path())
    model.network.eval()
    images = load_fashion_mnist().test.images
    single_inputs = [model.network_input(images[i : i + 1]) for i in range(args.single)]
    batch_inputs = [
        model.network_input(images[i * args.batch : (i + 1) * args.batch]) for i in range(args.batches)
    ]
    with torch.inference_mode():
        traced = torch.jit.optimize_for_inference(torch.jit.trace(model.network, batch_inputs[0]))
        assert torch.allclose(traced(batch_inputs[0]), model.network(batch_inputs[0]), atol=1e-4)
        model.fold_batch_norm()
        folded = model.inference_network
        assert folded is not None
        assert torch.allclose(folded(batch_inputs[0]), model.network(batch_inputs[0]), atol=1e-4)
    variants = {"eager": model.network, "eager, batch-norm folded": folded, "torchscript": traced}
    single: dict[str, list[float]] = {name: [] for name in variants}
    batched: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(3):  # interleave, so background load hits both variants alike
        for name, function in variants.items():
            timings(function, single_inputs[:20])  # warm-up
            single[name] += timings(function, single_inputs)
            batched[name] += timings(function, batch_inputs)
    rows = [
        {
            "variant": name,
            "single_p50_ms": median(single[name]),
            "single_p99_ms": percentile(single[name], 0.99),
            "batch_images_per_s": args.batch / (median(batched[name]) / 1000),
        }
        for name in variants
    ]
    print_table(f"promoted model inference, {args.threads} thread(s), batch {args.batch}", rows)
    fastest = min(rows, key=lambda row: row["single_p50_ms"])["variant"]
    print(f"fastest single-image p50: {fastest}")
    write_result("inference", rows, threads=args.threads, batch_size=args.batch, fastest_single=fastest)


if __name__ == "__main__":
    main()
