"""Plain modules of the comics system: the closure sequence scorer and the character-crop loss.

The scorer sees a sequence of panel tokens (each panel's image embedding plus its text embedding,
at its position in reading order) and one option token at the masked position, and returns one
logit per option. Options are panels (visual cloze, ComicsPAP) or texts (text cloze, character
coherence as two text orders); a hint about the masked panel (its text for panel options, its
image for text options) is added to the option token when a task gives one. It is a cross-encoder:
every option is scored in its own copy of the sequence, so context and option interact in every
layer.

Panel options may also bring their patch tokens. The scorer then compares the options with each
other, as a reader does when the options are one panel re-lettered (character coherence, the
release's text closure): it pools each option's patch tokens where the options differ and adds what
sets that option apart to its token, in proportion to how local the differences are. Pooled panel
embeddings alone cannot see such a change: a panel and its copy with two balloons' texts swapped
embed to cosine 0.9999. Different panels differ everywhere; their pooled embeddings already tell
them apart, and the comparison stays out of the way.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGE, TEXT = 0, 1


class ClosureScorer(nn.Module):
    def __init__(
        self,
        embed_dim: int,
        width: int = 128,
        layers: int = 2,
        heads: int = 4,
        max_positions: int = 8,
        patch_dim: int | None = None,
    ) -> None:
        """``patch_dim``: width of the image tower's patch tokens, to compare panel options where
        they differ (None: pooled embeddings only)."""
        super().__init__()
        self.image_projection = nn.Linear(embed_dim, width)
        self.focus = (
            nn.Sequential(nn.RMSNorm(patch_dim, eps=1e-6), nn.Linear(patch_dim, width))
            if patch_dim
            else None
        )
        self.text_projection = nn.Linear(embed_dim, width)
        self.no_text = nn.Parameter(torch.zeros(width))
        self.positions = nn.Parameter(torch.randn(max_positions, width) * 0.02)
        self.kinds = nn.Parameter(torch.randn(2, width) * 0.02)
        self.target = nn.Parameter(torch.randn(width) * 0.02)
        layer = nn.TransformerEncoderLayer(
            width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 1)
        self.max_positions = max_positions

    def forward(
        self,
        context_images: Tensor,
        context_texts: Tensor | None,
        context_positions: Tensor,
        options: Tensor,
        option_kind: int,
        target_position: Tensor,
        hint: Tensor | None = None,
        hint_mask: Tensor | None = None,
        option_patches: Tensor | None = None,
    ) -> Tensor:
        """Logits ``[B, M]``.

        Args:
            context_images: ``[B, K, D]`` unit image embeddings of the context panels.
            context_texts: ``[B, K, D]`` their text embeddings, or None; rows of zeros mean "no
                text" (a learned token replaces them).
            context_positions: ``[B, K]`` reading-order positions of the context panels.
            options: ``[B, M, D]`` embeddings of the options (images or texts, per ``option_kind``).
            option_kind: ``IMAGE`` or ``TEXT``.
            target_position: ``[B]`` position of the masked panel.
            hint: ``[B, D]`` the masked panel's text (image options) or image (text options).
            hint_mask: ``[B]`` which rows have a hint.
            option_patches: ``[B, M, N, P]`` patch tokens of panel options (see ``option_focus``).
        """
        if (
            int(context_positions.max()) >= self.max_positions
            or int(target_position.max()) >= self.max_positions
        ):
            raise ValueError(
                f"sequences longer than {self.max_positions} panels need a larger max_positions"
            )
        tokens = self.image_projection(context_images) + self.positions[context_positions]
        if context_texts is not None:
            has_text = context_texts.abs().sum(-1, keepdim=True) > 0
            tokens = tokens + torch.where(
                has_text, self.text_projection(context_texts), self.no_text
            )
        else:
            tokens = tokens + self.no_text
        own, other = (
            (self.image_projection, self.text_projection)
            if option_kind == IMAGE
            else (self.text_projection, self.image_projection)
        )
        option_tokens = own(options) + self.kinds[option_kind] + self.target
        option_tokens = option_tokens + self.positions[target_position][:, None]
        if option_patches is not None and self.focus is not None:
            focus, locality = option_focus(option_patches)
            option_tokens = option_tokens + locality[:, None, None] * self.focus(focus)
        if hint is not None:
            extra = other(hint)
            if hint_mask is not None:
                extra = extra * hint_mask[:, None].to(extra.dtype)
            option_tokens = option_tokens + extra[:, None]
        batch, count, width = option_tokens.shape
        sequence = torch.cat(
            [
                tokens[:, None].expand(-1, count, -1, -1),
                option_tokens[:, :, None],
            ],
            dim=2,
        ).reshape(batch * count, -1, width)
        out = self.norm(self.encoder(sequence)[:, -1])
        return self.head(out).reshape(batch, count)


def option_focus(option_patches: Tensor) -> tuple[Tensor, Tensor]:
    """``([B, M, P], [B])``: each option's patch tokens pooled where the options differ, minus
    their mean over the options; and how local the differences are.

    A patch weighs by how far the options' tokens there lie from their mean, so the pooled feature
    of two copies of a panel that differ only in their balloons describes the balloons (and what
    the tower's attention mixed into them), and subtracting the mean leaves what sets each option
    apart. Identical options give zeros. Locality is 1 minus the weights' entropy over its
    maximum, log N: 1 when one patch differs, 0 when all differ alike (on the demo sample, after
    training: 0.05-0.29 for a panel and its re-lettered copies, at most 0.013 for different panels).
    """
    residual = option_patches - option_patches.mean(1, keepdim=True)
    spread = residual.norm(dim=-1).mean(1)  # [B, N]
    weights = spread / spread.sum(-1, keepdim=True).clamp_min(1e-12)
    pooled = torch.einsum("bn,bmnp->bmp", weights, option_patches)
    count = option_patches.shape[2]
    entropy = -(weights * weights.clamp_min(1e-12).log()).sum(-1)
    locality = (1 - entropy / math.log(count)) if count > 1 else torch.ones_like(entropy)
    return pooled - pooled.mean(1, keepdim=True), locality


def supervised_contrastive_loss(
    embeddings: Tensor, labels: Tensor, temperature: float = 0.1
) -> Tensor:
    """SupCon (Khosla et al. 2020): crops of one character pull together, others push apart.

    ``labels < 0`` mark padding rows, ignored. Anchors with no positive are left out; with none
    at all the loss is zero (and still part of the graph).
    """
    keep = labels >= 0
    embeddings, labels = F.normalize(embeddings[keep], dim=-1), labels[keep]
    if len(labels) < 2:
        return embeddings.sum() * 0.0
    logits = embeddings @ embeddings.T / temperature
    self_mask = torch.eye(len(labels), dtype=torch.bool, device=logits.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = (labels[:, None] == labels[None, :]) & ~self_mask
    log_probability = logits.log_softmax(dim=1).masked_fill(self_mask, 0.0)
    counts = positives.sum(1)
    anchors = counts > 0
    if not anchors.any():
        return embeddings.sum() * 0.0
    mean_log_probability = (log_probability * positives).sum(1)[anchors] / counts[anchors]
    return -mean_log_probability.mean()
