"""Run an open_clip ViT image tower on inputs of another size than it was built for.

Self-distillation feeds the student small local crops (DINO: 96 px for a 224-px model); the patch
grid shrinks and the learned position embeddings are resampled to it, as DINO does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def resample_positions(positional_embedding: Tensor, grid: tuple[int, int]) -> Tensor:
    """``[1 + H·W, D]`` class + patch positions, bicubically resampled to a ``grid`` of patches."""
    cls_pos, patch_pos = positional_embedding[:1], positional_embedding[1:]
    side = int(round(patch_pos.shape[0] ** 0.5))
    if (side, side) == tuple(grid):
        return positional_embedding
    patch_pos = patch_pos.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patch_pos = F.interpolate(patch_pos, size=grid, mode="bicubic", align_corners=False)
    return torch.cat([cls_pos, patch_pos.flatten(2).transpose(1, 2)[0]], dim=0)


def encode_any_size(visual: nn.Module, images: Tensor) -> Tensor:
    """The pooled, projected embedding of an open_clip ``VisionTransformer`` at any input size."""
    if tuple(images.shape[-2:]) == tuple(visual.image_size):
        return visual(images)
    x = visual.conv1(images)
    grid = tuple(x.shape[-2:])
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1)
    x = x + resample_positions(visual.positional_embedding, grid).to(x.dtype)
    x = visual.ln_pre(visual.patch_dropout(x))
    x = visual.transformer(x)
    pooled, _ = visual._pool(x)
    return pooled @ visual.proj if visual.proj is not None else pooled
