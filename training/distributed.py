"""Several training processes as one run (started by torchrun): gloo on CPU, NCCL on CUDA.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE; without them this is one process and
every operation here is a no-op, so the trainer has a single code path.
"""

import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @classmethod
    def from_env(cls) -> "Distributed":
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
        )

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes the run directory, checkpoints and tracking."""
        return self.rank == 0

    @property
    def backend(self) -> str | None:
        return dist.get_backend() if self.enabled and dist.is_initialized() else None

    def start(self, device_type: str) -> None:
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device_type == "cuda" else "gloo")

    def stop(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    def sum(self, values: list[float], device: torch.device) -> list[float]:
        """Element-wise sum over all processes (float64, so means stay exact to the last digit)."""
        if not self.enabled:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.tolist()]

    def from_main(self, value: T) -> T:
        """Rank 0's `value`, on every process."""
        if not self.enabled:
            return value
        box: list[Any] = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[no-any-return]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def shard(self, tensor: torch.Tensor) -> torch.Tensor:
        """This process's share of a batch or split: every `world_size`-th item from `rank`."""
        return tensor[self.rank :: self.world_size] if self.enabled else tensor


SINGLE_PROCESS = Distributed()
