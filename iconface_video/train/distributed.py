"""Where this process stands in a training job: torchrun's environment read once, and the one
rule ranks use to decide together (checkpoint now, stop now)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """This process's place in the job (rank 0 of 1 without torchrun)."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join torchrun's process group when its environment is set; NCCL on CUDA, gloo on CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Dist(rank=rank, world=world, device=device)


def agree(flag: bool, d: Dist) -> bool:
    """True on every rank when any rank says so (ranks must checkpoint and stop together)."""
    if d.world == 1:
        return flag
    x = torch.tensor([1.0 if flag else 0.0], device=d.device)
    dist.all_reduce(x, op=dist.ReduceOp.MAX)
    return bool(x.item() > 0)
