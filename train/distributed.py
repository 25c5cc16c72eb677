"""One process or many under ``torchrun``: rank facts, process-group set-up and metric averaging.

``torchrun --nproc_per_node=2 -m entrodec.decoding.cli train ...`` sets ``RANK``/``WORLD_SIZE``; the
trainer then wraps its model in DistributedDataParallel (gloo on CPU, NCCL on GPU), each rank rolls
out its own prompts, gradients are averaged, and rank 0 alone writes metrics and checkpoints.
With ``token-mean`` each rank normalises by its own token count before the gradients are averaged (the
usual DDP reading, not one global token mean); metrics are averaged over ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Processes:
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mean(self, values: list[float]) -> list[float]:
        """Each value averaged over the ranks (unchanged with one process)."""
        if self.world == 1:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(tensor)
        return (tensor / self.world).tolist()

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def start() -> Processes:
    """Join the process group when launched by ``torchrun``; otherwise one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Processes(0, 1, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Processes(rank, world, device)


def stop(processes: Processes) -> None:
    if processes.world > 1 and dist.is_initialized():
        dist.destroy_process_group()
