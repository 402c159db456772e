"""The project's collectives and rank logic, each a no-op at world size 1 or without a group."""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    """True inside an initialised torch.distributed job."""
    return dist.is_available() and dist.is_initialized()


def all_reduce_sum(tensor: torch.Tensor, group=None) -> torch.Tensor:
    """In-place SUM over ``group`` (default: every rank); returns the tensor."""
    if is_initialized() and dist.get_world_size(group) > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
    return tensor
