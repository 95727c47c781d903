"""Training-loop efficiency: seconds per epoch of our loop vs a bare loop and vs the conventional
torchvision pipeline (FashionMNIST + ToTensor + DataLoader), same network, batch size and threads.

    python -m benchmarks.training_loop [--images 10000] [--repeats 3] [--threads 2]

The three loops run interleaved, `--repeats` times each, on the same images; medians are reported.
"""

import argparse
import gzip
import shutil
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from benchmarks.common import median, print_table, write_result
from text_recognizer.datasets.fashion_mnist import load_fashion_mnist
from text_recognizer.models import ClassifierModel
from text_recognizer.paths import raw_data_dir
from text_recognizer.preprocessing import Normalization
from training.config import CONFIGS_DIR, AugmentationConfig, load_config
from training.trainer import shuffled_batches

NETWORK_ARGS = load_config(CONFIGS_DIR / "default.yaml").network


def fresh_model(normalization: Normalization) -> tuple[ClassifierModel, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = ClassifierModel(
        NETWORK_ARGS.name, NETWORK_ARGS.args, (1, 28, 28), tuple("0123456789"), normalization
    )
    return model, torch.optim.AdamW(model.network.parameters(), lr=1e-3)


def our_loop(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, normalization: Normalization
) -> float:
    model, optimizer = fresh_model(normalization)
    started = time.perf_counter()
    model.fit_epoch(shuffled_batches(images, labels, batch_size, 0, 1, AugmentationConfig()), optimizer)
    return time.perf_counter() - started


def bare_loop(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, normalization: Normalization
) -> float:
    """Tensors already normalized in memory: only forward, backward and step."""
    model, optimizer = fresh_model(normalization)
    network = model.network.train()
    inputs = ((images.float() / 255 - normalization.mean) / normalization.std).unsqueeze(1)
    inputs = inputs.contiguous(memory_format=torch.channels_last)
    started = time.perf_counter()
    order = torch.randperm(labels.numel())
    for start in range(0, labels.numel() - batch_size + 1, batch_size):
        index = order[start : start + batch_size]
        loss = torch.nn.functional.cross_entropy(network(inputs[index]), labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def torchvision_loop(root: Path, count: int, batch_size: int, normalization: Normalization) -> float:
    model, optimizer = fresh_model(normalization)
    network = model.network.train()
    transform = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize(normalization.mean, normalization.std)]
    )
    dataset = Subset(
        datasets.FashionMNIST(str(root), train=True, download=False, transform=transform), range(count)
    )
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True)
    started = time.perf_counter()
    for inputs, labels in loader:
        loss = torch.nn.functional.cross_entropy(network(inputs), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def torchvision_root(raw_dir: Path) -> Path:
    """torchvision's expected layout (FashionMNIST/raw/ with unzipped files) in a temporary folder."""
    root = Path(tempfile.mkdtemp(prefix="fmnist-torchvision-"))
    target = root / "FashionMNIST" / "raw"
    target.mkdir(parents=True)
    for path in raw_dir.glob("*.gz"):
        with gzip.open(path) as source, (target / path.stem).open("wb") as out:
            shutil.copyfileobj(source, out)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_fashion_mnist()
    root = torchvision_root(raw_data_dir() / "fashion_mnist")
    images, labels = data.train.images[: args.images], data.train.labels[: args.images]
    timings: dict[str, list[float]] = {"bare loop": [], "our loop": [], "torchvision DataLoader": []}
    try:
        for _ in range(args.repeats):
            timings["bare loop"].append(bare_loop(images, labels, args.batch_size, data.normalization))
            timings["our loop"].append(our_loop(images, labels, args.batch_size, data.normalization))
            timings["torchvision DataLoader"].append(
                torchvision_loop(root, args.images, args.batch_size, data.normalization)
            )
    finally:
        shutil.rmtree(root)
    bare = median(timings["bare loop"])
    scale = len(data.train) / args.images
    rows = [
        {
            "loop": name,
            "median_s": median(values),
            "per_55k_epoch_s": median(values) * scale,
            "vs_bare": median(values) / bare,
            "runs": len(values),
        }
        for name, values in timings.items()
    ]
    print_table(f"training loop, {args.images} images, batch {args.batch_size}, {args.threads} threads", rows)
    ours, conventional = median(timings["our loop"]), median(timings["torchvision DataLoader"])
    print(f"overhead of our loop over the bare loop: {ours / bare:.3f}x (goal <= 1.10)")
    print(f"speed-up of our loop over torchvision + DataLoader: {conventional / ours:.2f}x")
    write_result(
        "training_loop",
        rows,
        images=args.images,
        threads=args.threads,
        batch_size=args.batch_size,
        overhead_ratio=ours / bare,
        speedup_vs_torchvision=conventional / ours,
    )


if __name__ == "__main__":
    main()
