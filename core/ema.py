"""Exponential-moving-average teacher for self-distillation (DINO, SILC, RS-M-CLIP)."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class EMATeacher(nn.Module):
    """A frozen copy of a student module, updated as ``t ← m·t + (1−m)·s``.

    The momentum follows DINO's cosine ramp from ``momentum`` to ``final_momentum`` over training;
    equal values give SILC's fixed momentum. The teacher is a submodule, so it lives in checkpoints.
    """

    def __init__(self, student: nn.Module, momentum: float = 0.996, final_momentum: float = 1.0):
        super().__init__()
        self.module = copy.deepcopy(student)
        self.module.requires_grad_(False)
        self.momentum = momentum
        self.final_momentum = final_momentum

    def momentum_at(self, step: int, total_steps: int) -> float:
        progress = min(1.0, step / max(1, total_steps))
        ramp = 0.5 * (1.0 - math.cos(math.pi * progress))
        return self.momentum + (self.final_momentum - self.momentum) * ramp

    @torch.no_grad()
    def update(self, student: nn.Module, step: int, total_steps: int) -> float:
        m = self.momentum_at(step, total_steps)
        for teacher_p, student_p in zip(
            self.module.parameters(), student.parameters(), strict=True
        ):
            teacher_p.mul_(m).add_(student_p.detach(), alpha=1.0 - m)
        for teacher_b, student_b in zip(self.module.buffers(), student.buffers(), strict=True):
            teacher_b.copy_(student_b)
        return m

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.module(*args, **kwargs)
