"""Collectives the losses need, written so the same code runs with or without a process group.

Contrastive losses see negatives from every rank only if features are gathered *with* gradients:
``torch.distributed.all_gather`` cuts the graph, so each rank would train its own slice alone.
Every helper is the identity (or its single-process equivalent) outside a multi-process run, so
unit tests and single-device training need no special casing.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
from torch import Tensor


def is_initialised() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialised() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialised() else 1


class _ContiguousGrad(torch.autograd.Function):
    """Identity whose backward hands on a contiguous gradient.

    Gloo's scatter (used by the all_gather backward on CPU) silently writes wrong values into
    non-contiguous buffers (pytorch/pytorch#192920), and the gradient of e.g. an ``einsum`` over
    the gathered tensor arrives permuted. Found by tests/core/test_distributed.py (MIL-NCE).
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.contiguous()


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0, keeping the autograd graph.

    The backward pass sums the incoming gradients of all ranks into each rank's own slice, so a
    loss computed on the gathered batch trains every rank's encoder. Every rank must pass the same
    shape (use ``drop_last=True`` in samplers).
    """
    if world_size() == 1:
        return x
    return _ContiguousGrad.apply(torch.cat(dist_fn.all_gather(x), dim=0))


def gather(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0 without gradients (labels, masks)."""
    if world_size() == 1:
        return x
    as_bool = x.dtype == torch.bool
    local = x.to(torch.uint8) if as_bool else x
    parts = [torch.empty_like(local) for _ in range(world_size())]
    dist.all_gather(parts, local.contiguous())
    out = torch.cat(parts, dim=0)
    return out.bool() if as_bool else out


@torch.no_grad()
def all_reduce_sum(x: Tensor) -> Tensor:
    """Sum ``x`` over ranks (a new tensor; no gradients), e.g. for statistics like DINO's centre."""
    out = x.detach().clone()
    if world_size() > 1:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
