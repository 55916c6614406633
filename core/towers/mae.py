"""ViT pieces for masked autoencoding (MAE / M3AE): patches, random masking, encoder, decoder.

The encoder is open_clip's ViT run on the visible patches only, which is what makes a 75 % mask
ratio cheap and lets CLIP weights start it; the decoder puts mask tokens back in place
(``ids_restore``) and predicts every patch.
"""

from __future__ import annotations

from typing import Any

import torch
from domainvlm.core.towers.clip import build_clip
from domainvlm.core.towers.vit_sizes import resample_positions
from open_clip.transformer import VisionTransformer
from torch import Tensor, nn


def patchify(images: Tensor, patch: int) -> Tensor:
    """``[B, C, H, W]`` → ``[B, N, p*p*C]``, patches row-major, each flattened as (row, col, band)."""
    batch, chans, height, width = images.shape
    if height % patch or width % patch:
        raise ValueError(f"image size {height}x{width} is not a multiple of patch size {patch}")
    rows, cols = height // patch, width // patch
    patches = images.reshape(batch, chans, rows, patch, cols, patch)
    return patches.permute(0, 2, 4, 3, 5, 1).reshape(batch, rows * cols, patch * patch * chans)


def unpatchify(
    patches: Tensor, patch: int, in_chans: int, grid: tuple[int, int] | None = None
) -> Tensor:
    """Inverse of ``patchify``; ``grid`` (rows, cols) defaults to a square."""
    batch, count, dim = patches.shape
    if dim != patch * patch * in_chans:
        raise ValueError(f"patch dim {dim} != {patch}*{patch}*{in_chans}")
    rows, cols = grid if grid is not None else _square_grid(count)
    images = patches.reshape(batch, rows, cols, patch, patch, in_chans)
    return images.permute(0, 5, 1, 3, 2, 4).reshape(batch, in_chans, rows * patch, cols * patch)


def sincos_pos_embed_2d(dim: int, grid: int | tuple[int, int]) -> Tensor:
    """Fixed 2-D sin-cos positions ``[rows*cols, dim]``: half the dims encode the row, half the col."""
    if dim % 4:
        raise ValueError(f"sin-cos position dim must be a multiple of 4, got {dim}")
    rows, cols = (grid, grid) if isinstance(grid, int) else grid
    row_pos, col_pos = torch.meshgrid(
        torch.arange(rows, dtype=torch.float64),
        torch.arange(cols, dtype=torch.float64),
        indexing="ij",
    )
    return torch.cat([_sincos_1d(dim // 2, row_pos), _sincos_1d(dim // 2, col_pos)], dim=1).float()


def _sincos_1d(dim: int, positions: Tensor) -> Tensor:
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2))
    angles = positions.reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def random_masking(
    tokens: Tensor, ratio: float, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Keep a random ``round(N * (1 - ratio))`` tokens per sample.

    Returns ``(visible [B, keep, D], mask [B, N] with 1 = masked, ids_restore [B, N])``, where
    ``ids_restore`` puts a sequence in shuffled order (visible first) back in patch order.
    """
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {ratio}")
    batch, count, dim = tokens.shape
    keep = round(count * (1 - ratio))
    if keep == 0:
        raise ValueError(f"mask ratio {ratio} leaves no visible token out of {count}")
    if keep == count:  # nothing masked: keep patch order, so features line up with the grid
        ids_restore = torch.arange(count, device=tokens.device).expand(batch, -1)
        return tokens, torch.zeros(batch, count, device=tokens.device), ids_restore
    device = generator.device if generator is not None else tokens.device
    noise = torch.rand(batch, count, generator=generator, device=device).to(tokens.device)
    ids_shuffle = noise.argsort(dim=1)
    ids_restore = ids_shuffle.argsort(dim=1)
    ids_keep = ids_shuffle[:, :keep]
    visible = tokens.gather(1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(batch, count, device=tokens.device)
    mask[:, :keep] = 0
    return visible, mask.gather(1, ids_restore), ids_restore


def _square_grid(count: int) -> tuple[int, int]:
    side = round(count**0.5)
    if side * side != count:
        raise ValueError(f"{count} patches do not form a square grid; pass grid=(rows, cols)")
    return side, side


def _blocks(width: int, depth: int, heads: int, mlp_ratio: float) -> nn.ModuleList:
    return nn.ModuleList(
        nn.TransformerEncoderLayer(
            width,
            heads,
            dim_feedforward=int(width * mlp_ratio),
            dropout=0.0,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        for _ in range(depth)
    )


def _cls_and_patch_positions(dim: int, grid: tuple[int, int]) -> Tensor:
    """Sin-cos patch positions with a zero row in front for the class token."""
    return torch.cat([torch.zeros(1, dim), sincos_pos_embed_2d(dim, grid)]).unsqueeze(0)


class MaskedViTEncoder(nn.Module):
    """An open_clip ``VisionTransformer`` whose blocks see only the visible patches (+ class token).

    Positions are added to every patch before masking drops some, so a visible patch keeps the
    position of where it was. Building on open_clip's module makes its CLIP weights load as they are
    (``from_openclip``); ``from_sizes`` builds the same module at any size with fixed 2-D sin-cos
    positions and random weights, for training from scratch. The projection to CLIP's joint space is
    dropped: M3AE reads the tokens, not the pooled embedding.

    A state dict whose position grid differs (pretraining at 288 px, VQA at 384 px) loads: learned
    positions are resampled bicubically, fixed sin-cos positions are kept as computed for this grid.
    """

    def __init__(self, visual: VisionTransformer, fixed_positions: bool) -> None:
        super().__init__()
        if not isinstance(visual, VisionTransformer) or visual.attn_pool is not None:
            raise ValueError(
                f"the masked image tower needs an open_clip ViT with a class token, got "
                f"{type(visual).__name__}"
            )
        visual.proj = None
        self.visual = visual
        self.fixed_positions = fixed_positions
        self.image_size = visual.image_size[0]
        self.patch = visual.patch_size[0]
        self.in_chans = visual.conv1.in_channels
        self.width = visual.transformer.width
        self.grid = tuple(visual.grid_size)
        self.num_patches = self.grid[0] * self.grid[1]
        if visual.image_size[0] != visual.image_size[1] or self.patch != visual.patch_size[1]:
            raise ValueError(
                f"the masked image tower needs square images and patches, got {visual}"
            )

    @classmethod
    def from_sizes(
        cls,
        image_size: int,
        patch: int,
        in_chans: int = 3,
        width: int = 768,
        depth: int = 12,
        heads: int = 12,
        mlp_ratio: float = 4.0,
    ) -> MaskedViTEncoder:
        """Random weights and fixed sin-cos positions (MAE's), so the image size may change."""
        if image_size % patch:
            raise ValueError(f"image_size {image_size} is not a multiple of patch {patch}")
        visual = VisionTransformer(
            image_size=image_size,
            patch_size=patch,
            width=width,
            layers=depth,
            heads=heads,
            mlp_ratio=mlp_ratio,
            output_dim=width,
            pos_embed_type="sin_cos_2d",
        )
        if in_chans != 3:
            visual.conv1 = nn.Conv2d(in_chans, width, kernel_size=patch, stride=patch, bias=False)
        return cls(visual, fixed_positions=True)

    @classmethod
    def from_openclip(
        cls,
        model_name: str,
        pretrained: str | None = None,
        image_size: int | None = None,
        in_chans: int = 3,
    ) -> MaskedViTEncoder:
        """The image tower of an open_clip model (``ViT-B-16``), with its CLIP weights if asked.

        ``pretrained`` is an OpenCLIP tag or a local open_clip state-dict file, as for
        ``build_clip``; ``image_size`` other than the model's resamples its learned positions.
        """
        model, _ = build_clip(model_name, pretrained, in_chans=in_chans, image_size=image_size)
        return cls(model.visual, fixed_positions=False)

    def forward(
        self, images: Tensor, mask_ratio: float = 0.0, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Returns ``(tokens [B, 1+keep, width] incl. cls, mask [B, N] 1 = masked, ids_restore)``.

        The tokens are after ``ln_post``; unmasked, they equal open_clip's own final tokens.
        """
        expected = (self.in_chans, self.image_size, self.image_size)
        if tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"expected images [B, {', '.join(map(str, expected))}], got {list(images.shape)}"
            )
        visual = self.visual
        patches = visual.conv1(images).flatten(2).transpose(1, 2)
        positions = visual.positional_embedding.to(patches.dtype)
        visible, mask, ids_restore = random_masking(patches + positions[1:], mask_ratio, generator)
        cls = (visual.class_embedding.to(patches.dtype) + positions[0]).expand(
            visible.shape[0], 1, -1
        )
        tokens = visual.transformer(visual.ln_pre(torch.cat([cls, visible], dim=1)))
        return visual.ln_post(tokens), mask, ids_restore

    @property
    def blocks(self) -> nn.ModuleList:
        """The transformer blocks, in order."""
        return self.visual.transformer.resblocks

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any) -> None:
        key = f"{prefix}visual.positional_embedding"
        own = self.visual.positional_embedding
        theirs = state_dict.get(key)
        if theirs is not None and theirs.shape[0] != own.shape[0]:
            state_dict[key] = (
                own.detach().clone()
                if self.fixed_positions
                else resample_positions(theirs, self.grid)
            )
        super()._load_from_state_dict(state_dict, prefix, *args)


class MAEDecoder(nn.Module):
    """Linear enc→dec, mask tokens re-inserted, fixed sin-cos positions, blocks, linear to p²·C."""

    def __init__(
        self,
        num_patches: int,
        patch: int,
        in_chans: int,
        enc_width: int,
        dec_width: int = 384,
        depth: int = 4,
        heads: int = 6,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.num_patches = num_patches
        self.embed = nn.Linear(enc_width, dec_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dec_width))
        grid = _square_grid(num_patches)
        self.register_buffer(
            "pos_embed", _cls_and_patch_positions(dec_width, grid), persistent=False
        )
        self.blocks = _blocks(dec_width, depth, heads, mlp_ratio)
        self.norm = nn.LayerNorm(dec_width)
        self.predict = nn.Linear(dec_width, patch * patch * in_chans)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, tokens: Tensor, ids_restore: Tensor) -> Tensor:
        """``tokens [B, 1+keep, enc_width]`` (cls first) → predicted patches ``[B, N, p²·C]``."""
        tokens = self.embed(tokens)
        batch, seen, dim = tokens.shape
        if ids_restore.shape != (batch, self.num_patches):
            raise ValueError(
                f"ids_restore must be [{batch}, {self.num_patches}], got {list(ids_restore.shape)}"
            )
        masked = self.mask_token.expand(batch, self.num_patches + 1 - seen, -1)
        shuffled = torch.cat([tokens[:, 1:], masked], dim=1)
        patches = shuffled.gather(1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))
        tokens = torch.cat([tokens[:, :1], patches], dim=1) + self.pos_embed
        for block in self.blocks:
            tokens = block(tokens)
        return self.predict(self.norm(tokens))[:, 1:]
