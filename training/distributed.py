"""torchrun scale-out: process-group setup and an explicit all-reduce of LoRA gradients.

We average LoRA gradients with one all-reduce per optimizer step instead of wrapping the UNet in DDP:
DRaFT runs several forward passes per backward (K > 1, LV re-noisings, checkpoint recomputation) and
accumulates micro-batches, which DDP's per-forward reducer does not support without static-graph tricks;
an explicit all-reduce after backward gives every rank the same averaged gradient by construction (the
pitfall of calling the raw UNet under DDP cannot arise). gloo on CPU, nccl on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """rank, world size, local rank and whether a process group was started by us."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    started: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistInfo:
    """Start the process group when launched by torchrun (WORLD_SIZE > 1); single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device_type == "cuda":
        torch.cuda.set_device(local)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local, started=True)


def average_gradients(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """grad <- mean over ranks of grad (one flat all-reduce)."""
    if info.world_size <= 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= info.world_size
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def broadcast_parameters(params: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Copy rank 0's parameter values to every rank (identical LoRA start)."""
    if info.world_size <= 1:
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def average_metrics(values: dict[str, float], info: DistInfo, device) -> dict[str, float]:
    """Mean of scalar metrics over ranks."""
    if info.world_size <= 1:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], device=device, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) / info.world_size for k, v in zip(keys, t.tolist())}


def barrier(info: DistInfo) -> None:
    if info.world_size > 1:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.started and dist.is_initialized():
        dist.destroy_process_group()
