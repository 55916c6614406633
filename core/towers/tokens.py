"""Patch tokens and the pooled embedding of an open_clip ViT in one pass."""

from __future__ import annotations

from torch import Tensor, nn


def encode_with_patch_tokens(visual: nn.Module, images: Tensor) -> tuple[Tensor, Tensor]:
    """``(embedding [B, embed_dim], patch_tokens [B, N, width])`` from an open_clip ViT.

    The patch tokens are the final-layer outputs after ``ln_post`` (unprojected), which is what
    ``output_tokens=True`` returns; the flag is restored afterwards.
    """
    previous = visual.output_tokens
    visual.output_tokens = True
    try:
        embedding, tokens = visual(images)
    finally:
        visual.output_tokens = previous
    return embedding, tokens
