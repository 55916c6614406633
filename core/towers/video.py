"""Video clip encoder: one frame encoder applied to every frame, then pooled over time.

SurgVLP embeds a clip as the mean of its frame embeddings; attention pooling learns per-frame
weights and starts out as exactly that mean (its scorer is zero-initialised).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

Pooling = Literal["mean", "attention"]


class FramePoolingTower(nn.Module):
    """``[B, T, C, H, W]`` → ``[B, D]`` with any frame encoder mapping ``[N, C, H, W]`` → ``[N, D]``."""

    def __init__(
        self, frame_encoder: nn.Module, pooling: Pooling = "mean", embed_dim: int | None = None
    ) -> None:
        """
        Args:
            frame_encoder: per-frame image encoder (an open_clip ``model.visual``, a ResNet, ...).
            pooling: ``mean`` (SurgVLP) or ``attention`` (learned softmax weights over frames).
            embed_dim: frame embedding size D, needed for ``attention`` pooling.
        """
        super().__init__()
        if pooling not in ("mean", "attention"):
            raise ValueError(f"pooling must be 'mean' or 'attention', got {pooling!r}")
        if pooling == "attention" and embed_dim is None:
            raise ValueError("attention pooling needs embed_dim (the frame embedding size)")
        self.frame_encoder = frame_encoder
        self.pooling = pooling
        self.scorer = nn.Linear(embed_dim, 1) if pooling == "attention" else None
        if self.scorer is not None:
            nn.init.zeros_(self.scorer.weight)
            nn.init.zeros_(self.scorer.bias)

    def encode_frames(self, clips: Tensor) -> Tensor:
        """Per-frame embeddings ``[B, T, D]`` (the whole clip batch goes through in one pass)."""
        if clips.ndim != 5:
            raise ValueError(f"expected clips [B, T, C, H, W], got {list(clips.shape)}")
        batch, frames = clips.shape[:2]
        embeddings = self.frame_encoder(clips.flatten(0, 1))
        return embeddings.reshape(batch, frames, -1)

    def forward(self, clips: Tensor) -> Tensor:
        frames = self.encode_frames(clips)
        if self.scorer is None:
            return frames.mean(dim=1)
        weights = torch.softmax(self.scorer(frames), dim=1)
        return (weights * frames).sum(dim=1)
