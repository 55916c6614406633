"""Soft-DTW (Cuturi & Blondel, ICML 2017) and PeskaVLP's procedure-aware alignment loss.

Soft-DTW replaces DTW's min over the three predecessors with the smooth minimum
``softmin_γ(a) = −γ log Σ exp(−a/γ)``, so the alignment cost of two sequences is differentiable.
PeskaVLP (arXiv 2410.00263) aligns a video's frame embeddings with its ordered keystep texts:
cost = column-wise −log-softmax of the cosine (each keystep's distribution over frames), γ = 0.1,
and the keysteps in reverse order are the hard negative:
``L = s·D(v, t) + r·max(s·D(v, t) − s·D(v, reversed t) + β, 0)`` with s = 0.01, r = 0.5, β = 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def soft_dtw(cost: Tensor, gamma: float = 0.1) -> Tensor:
    """Soft-DTW value of a ``[N, M]`` (or batched ``[B, N, M]``) cost matrix: ``[]`` or ``[B]``.

    The recursion runs over anti-diagonals, so each step is one vectorised softmin.
    """
    if gamma <= 0:
        raise ValueError(f"gamma must be positive, got {gamma}")
    batched = cost.ndim == 3
    if not batched:
        cost = cost[None]
    if cost.ndim != 3 or 0 in cost.shape[1:]:
        raise ValueError(f"cost must be [N, M] or [B, N, M] and non-empty, got {tuple(cost.shape)}")
    batch, rows, cols = cost.shape
    inf = torch.finfo(cost.dtype).max / 4
    # R padded with a border: R[0, 0] = 0, the rest of the border +inf
    previous2 = cost.new_full((batch, rows + 1), inf)  # diagonal d-2, indexed by row 0..rows
    previous1 = cost.new_full((batch, rows + 1), inf)  # diagonal d-1
    previous2[:, 0] = 0.0  # R[0, 0] lies on diagonal 0
    for diagonal in range(2, rows + cols + 1):  # i + j = diagonal, 1-based i, j
        current = cost.new_full((batch, rows + 1), inf)
        low, high = max(1, diagonal - cols), min(rows, diagonal - 1)
        if low <= high:
            i = torch.arange(low, high + 1, device=cost.device)
            j = diagonal - i
            candidates = torch.stack(
                [previous2[:, i - 1], previous1[:, i - 1], previous1[:, i]], dim=-1
            )  # R[i-1, j-1], R[i-1, j], R[i, j-1]
            softmin = -gamma * torch.logsumexp(-candidates / gamma, dim=-1)
            current = current.index_copy(1, i, cost[:, i - 1, j - 1] + softmin)
        previous2, previous1 = previous1, current
    result = previous1[:, rows]
    return result if batched else result[0]


def alignment_cost(frames: Tensor, steps: Tensor) -> Tensor:
    """``[T, K]`` cost: −log-softmax over frames of the cosine between frames and steps."""
    cosine = F.normalize(frames, dim=-1) @ F.normalize(steps, dim=-1).T
    return -F.log_softmax(cosine, dim=0)


def procedure_dtw_loss(
    frames: Tensor,
    steps: Tensor,
    gamma: float = 0.1,
    scale: float = 0.01,
    ratio: float = 0.5,
    margin: float = 0.0,
) -> Tensor:
    """PeskaVLP's loss for one video: frames ``[T, D]``, keysteps in procedure order ``[K, D]``."""
    forward = scale * soft_dtw(alignment_cost(frames, steps), gamma)
    backward = scale * soft_dtw(alignment_cost(frames, steps.flip(0)), gamma)
    return forward + ratio * torch.clamp(forward - backward + margin, min=0.0)
