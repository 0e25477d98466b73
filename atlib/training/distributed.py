"""Multi-process training under ``torchrun``: one process per GPU (NCCL) or per CPU worker (gloo).

The engine calls ``setup(device)`` once: without torchrun's environment (``WORLD_SIZE`` unset or 1) it is a no-op
single process. Under torchrun every process sees the same data order, takes its slice of each global batch, and
DistributedDataParallel averages the gradients. Because every loss term is a mean over the *local* batch and DDP
averages over processes, the gradient equals the single-process gradient of the global batch: beta means the same at
any process count (REFERENCE.md section 5; summing per-replica means would multiply it by the process count).
Only rank 0 writes records and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: torch.device) -> tuple[Dist, torch.device]:
    """Join the torchrun process group if there is one; returns the context and this process's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, local_rank), device


def all_reduce_sum(tensor: torch.Tensor, ctx: Dist) -> torch.Tensor:
    """Sum ``tensor`` over processes (in place; a no-op in a single process)."""
    if ctx.enabled:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def average_gradients(parameters, ctx: Dist) -> None:
    """Average the gradients of parameters that DDP does not manage (e.g. F-ActT adapters)."""
    if not ctx.enabled:
        return
    for p in parameters:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(ctx.world_size)


def barrier(ctx: Dist) -> None:
    if ctx.enabled:
        dist.barrier()


def teardown(ctx: Dist) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
