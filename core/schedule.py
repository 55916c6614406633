"""Learning-rate schedule: linear warmup, then cosine or linear decay (per optimiser step)."""

from __future__ import annotations

import math
from typing import Literal

Decay = Literal["cosine", "linear", "constant"]


def warmup_then_decay(
    step: int, total_steps: int, warmup_steps: int, decay: Decay = "cosine", min_ratio: float = 0.0
) -> float:
    """Multiplier of the base learning rate at ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if decay == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif decay == "linear":
        shape = 1.0 - progress
    else:
        raise ValueError(f"unknown decay {decay!r}; choose cosine, linear or constant")
    return min_ratio + (1.0 - min_ratio) * shape
