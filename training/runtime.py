"""Process-wide settings a run depends on: seeds, deterministic kernels, CPU threads, the device."""

import os
import random

import numpy as np
import torch


class DeviceError(RuntimeError):
    pass


def set_seeds(seed: int) -> None:
    """Seed every generator a run may touch and ask for deterministic kernels."""
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def configure_threads(num_threads: int | str, processes: int = 1) -> int:
    """Fix torch's intra-op threads (CPU results depend on the count, so it is part of the config).

    `auto` shares the usable cores among the training processes on this machine.
    """
    count = max(1, usable_cores() // processes) if num_threads == "auto" else int(num_threads)
    torch.set_num_threads(count)
    return count


def select_device(requested: str, local_rank: int = 0) -> torch.device:
    """The device to train on; with CUDA, the GPU of this process (`local_rank`) on its machine."""
    if requested == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            "device 'cuda' was requested but CUDA is not available here "
            "(torch.cuda.is_available() is False); use device=cpu or device=auto"
        )
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    if local_rank >= torch.cuda.device_count():
        raise DeviceError(f"process {local_rank} has no GPU: {torch.cuda.device_count()} visible")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)
