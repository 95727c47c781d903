"""Would several int8 networks, averaged, serve better than one float32 network in the same budget?

Issue 13, point 5 asks whether int8 weights let a larger model fit in 1 MB; issue 10's photo targets are
a few photos short, and averaging two trained runs was better on validation than either. An int8 copy
of the shipped network is 0.21 MB and its forward pass half as long, so two of them cost what one
float32 network does. For each given model (promoted artifacts: calibrated, mirror averaging as
chosen), float32 and int8 (ONNX Runtime static, QDQ, per-channel, moving-average ranges from the
model's own training images), and for the average of every group of them: top-1 accuracy per
validation domain (out of scope: top class "Out of scope"), the validation loss over all domains, the
weights' bytes (ONNX), and the forward pass of one image (with its mirror image) on one thread (p50
of three interleaved rounds after warm-ups; a group's is the sum of its members'). Members are
averaged as probabilities (each calibrated by its own temperature); the loss counts the images with a
class label (a model without "Out of scope" has none for out-of-scope photos). Validation splits only,
and the models must share theirs: the photo test split stays unread.

    python -m benchmarks.ensembles MODEL MODEL [...] [--single 300]
"""

import argparse
import itertools
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import median, print_table, write_result
from benchmarks.inference import as_served_input, calibration_inputs, onnx_models, timings
from release.evaluate import evaluation_sets
from text_recognizer.datasets.labelled_split import FASHION_MNIST_DOMAIN, Split
from text_recognizer.datasets.shop_photos import DOMAINS
from text_recognizer.evaluation import domain_report
from text_recognizer.labels import OUT_OF_SCOPE
from text_recognizer.models import ClassifierModel
from text_recognizer.models.onnx_network import OnnxRuntimeNetwork
from text_recognizer.promoted import model_file

Probabilities = dict[str, torch.Tensor]  # per validation domain


def onnx_networks(model: ClassifierModel) -> dict[str, tuple[OnnxRuntimeNetwork, int]]:
    """The model's network run by ONNX Runtime as served ("float32") and quantized to int8 as
    `benchmarks.inference` does it ("int8"), each with its ONNX model's bytes."""
    model.fold_batch_norm()
    assert model.inference_network is not None
    models = onnx_models(model.inference_network, model.input_shape, calibration_inputs(model))
    return {
        kind: (OnnxRuntimeNetwork(models[name], torch.get_num_threads()), len(models[name]))
        for kind, name in (("float32", "model"), ("int8", "static-average"))
    }


def served_probabilities(model: ClassifierModel, sets: dict[str, Split]) -> Probabilities:
    return {domain: torch.softmax(model.logits(split.images), dim=1) for domain, split in sets.items()}


def held_out(model: ClassifierModel) -> tuple[Any, ...]:
    """What decides a model's validation split: its data version, the hold-out's size and seed."""
    data = model.metadata.get("config", {}).get("data", {})
    return data.get("version"), data.get("val_size", 5000), data.get("split_seed", 0)


def label(path: Path, model: ClassifierModel) -> str:
    """A model's name in the table: its run's config name and seed, and its version directory."""
    config = model.metadata.get("config", {})
    return f"{config.get('name', '?')} seed {config.get('seed', '?')} ({path.parent.name[-12:]})"


def row(
    name: str, members: list[Probabilities], sets: dict[str, Split], class_names: tuple[str, ...]
) -> dict[str, Any]:
    probabilities = {domain: torch.stack([m[domain] for m in members]).mean(dim=0) for domain in sets}
    result: dict[str, Any] = {"model": name}
    for domain, split in sets.items():
        report = domain_report(probabilities[domain], split.labels, class_names, None, OUT_OF_SCOPE)
        result[domain] = report["accuracy"]
    labels = torch.cat([split.labels for split in sets.values()])
    stacked = torch.cat([probabilities[domain] for domain in sets])
    labelled = labels >= 0  # NO_CLASS: an out-of-scope photo, for a model without that class
    loss = torch.nn.functional.nll_loss(stacked[labelled].clamp_min(1e-12).log(), labels[labelled])
    result["val_loss"] = loss.item()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", type=Path, nargs="+", help="model.pt files or weights folders")
    parser.add_argument("--single", type=int, default=300, help="single-image forward passes timed")
    args = parser.parse_args()
    torch.set_num_threads(1)
    files = [model_file(path) for path in args.models]
    models = [ClassifierModel.load(path) for path in files]
    first = models[0]
    if any(model.class_names != first.class_names for model in models):
        parser.error("the models classify into different classes")
    if any(held_out(model) != held_out(first) for model in models):
        parser.error("the models hold out different validation splits (data version, size or seed)")
    sets = evaluation_sets(first, "val", (FASHION_MNIST_DOMAIN, *DOMAINS))
    images = sets[FASHION_MNIST_DOMAIN].images
    names = [label(path, model) for path, model in zip(files, models, strict=True)]
    kinds = ("float32", "int8")
    probabilities: dict[str, list[Probabilities]] = {kind: [] for kind in kinds}
    sizes: dict[str, list[int]] = {kind: [] for kind in kinds}
    networks: list[tuple[str, OnnxRuntimeNetwork, list[torch.Tensor]]] = []
    for model in models:
        model.network.eval()
        inputs = [as_served_input(model, images[i : i + 1]) for i in range(args.single)]
        for kind, (network, size) in onnx_networks(model).items():
            model.inference_network = network
            probabilities[kind].append(served_probabilities(model, sets))
            sizes[kind].append(size)
            networks.append((kind, network, inputs))
    times: list[list[float]] = [[] for _ in networks]
    for _ in range(3):  # interleaved, so background load hits every network alike
        for (_, network, inputs), taken in zip(networks, times, strict=True):
            timings(network, inputs[:20])  # warm-up
            taken += timings(network, inputs)
    forward = {
        kind: [median(t) for (k, _, _), t in zip(networks, times, strict=True) if k == kind] for kind in kinds
    }
    rows = []
    for kind, members in probabilities.items():
        for count in range(1, len(models) + 1):
            for chosen in itertools.combinations(range(len(models)), count):
                name = " + ".join(names[index] for index in chosen)
                measured = {
                    "weights": kind,
                    "bytes": sum(sizes[kind][index] for index in chosen),
                    "forward_p50_ms": sum(forward[kind][index] for index in chosen),
                }
                averaged = row(name, [members[index] for index in chosen], sets, first.class_names)
                rows.append(averaged | measured)
    print_table("validation top-1 per domain, one thread", rows)
    write_result("ensembles", rows, models=dict(zip(names, map(str, files), strict=True)), single=args.single)


if __name__ == "__main__":
    main()
