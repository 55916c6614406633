"""Heads on top of the towers: DINO's projection for self-distillation, and the answer classifier.

``ClassifierHead`` is the one VQA / classification head of every domain (M3AE's VQA answers, the
remote-sensing scene classes and RSVQA answers).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm


class DINOHead(nn.Module):
    """MLP → L2 norm → weight-normalised linear to ``out_dim`` prototypes (DINO).

    With ``norm_last_layer`` the weight-norm gain stays fixed at 1, so every prototype is a unit
    vector and each output is a cosine similarity in [-1, 1]; DINO found this stabilises training.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: int = 2048,
        bottleneck: int = 256,
        nlayers: int = 3,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"nlayers must be at least 1, got {nlayers}")
        dims = [in_dim] + [hidden] * (nlayers - 1) + [bottleneck]
        layers: list[nn.Module] = []
        for index, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(fan_in, fan_out))
            if index < nlayers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        for layer in self.mlp:
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                nn.init.zeros_(layer.bias)
        self.last_layer = weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        gain = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            gain.fill_(1.0)
        gain.requires_grad_(not norm_last_layer)

    def forward(self, features: Tensor) -> Tensor:
        hidden = nn.functional.normalize(self.mlp(features), dim=-1)
        return self.last_layer(hidden)


class ClassifierHead(nn.Module):
    """Linear → LayerNorm → GELU → Linear: the VQA classifier of M3AE and METER.

    The hidden layer is twice the input width unless given.
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or 2 * in_dim
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, features: Tensor) -> Tensor:
        """``[B, in_dim]`` → logits ``[B, num_classes]``."""
        return self.layers(features)
